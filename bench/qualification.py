"""Qualification wall time per chain step (issue 14 §5): ``luoctl qualify start --chain A,B,A``
with the default canaries (one 256 MiB memfd, 130 files in one session, 16 one-file sessions),
side by side on the real kernels in the LUO test VM (7.2.13 → 7.3.4 → 7.2.13, TCG: every byte
written, pinned, copied across the kexec and hashed under emulation) and on the simulator on
this host (the same driver; the simulator copies the bytes to disk at its "kexec").

Per step: creating the canaries (fill, seal, preserve, write after preserve), the kexec (from
asking for the update to verifying in the next kernel: the update, the reboot, the next boot and
luod's start), and verifying every canary (retrieve, sha256, size, seals, holes, finish). The
records are kept (``RECORDS``) for bench/abi_preflight.py's ``qualified`` column.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import table

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "vm" / "scripts"
RECORDS: list[dict[str, Any]] = []
WAIT_REPORT = (
    "for _ in $(seq 1 3000); do\n"
    '    luoctl --json qualify show >"$SHARE/qualification.json"; [ $? -ne 6 ] && break\n'
    "    sleep 0.2\ndone\n"
)


def _stage(boot: int, running: Path, chain: str = "") -> str:
    venv = Path(sys.executable).parent.parent
    start = (
        f'luoctl --json qualify start --chain {shlex.quote(chain)} >"$SHARE/start.json"\n'
        if chain
        else ""
    )
    return (
        f"VENV={shlex.quote(str(venv))}; SCRIPTS={shlex.quote(str(SCRIPTS))}\n"
        f"SHARE=$LUOD_VM_SHARE; RUNNING_KERNEL={shlex.quote(str(running))}\n"
        f"STATE=$SHARE/luod-state; CUSTODY=memory\ncd {shlex.quote(str(REPO))}\n"
        f'. "$SCRIPTS/common.sh"\nset -x\nmkdir -p "$STATE"\nstart_luod {boot}\n'
        "for _ in $(seq 1 600); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done\n"
        f"{start}{WAIT_REPORT}"
    )


def vm_run(workdir: Path) -> dict[str, Any]:
    from tests.vm.qemu import run_guest
    from tests.vm.test_cross_version import K72, K73, kernel_named

    a, b = kernel_named(K72), kernel_named(K73)
    stages = [_stage(1, a, f"{a},{b},{a}"), _stage(2, b), _stage(3, a)]
    result = run_guest(stages, kernel=a, timeout=2400, memory="3G", workdir=workdir)
    result.check()
    record: dict[str, Any] = json.loads((result.share / "qualification.json").read_text())
    return record


def sim_run(workdir: Path) -> dict[str, Any]:
    from luod.cli.main import main as luoctl
    from luod.kernel import _simabi
    from tests.bzimages import B_7_3, bzimage
    from tests.integration.conftest import start_daemon

    state = workdir / "luod"
    b = workdir / "bzImage-7.3.4"
    b.write_bytes(bzimage(B_7_3))
    a = _simabi.installed_native_image(state / "kernel")
    api = ["--socket", str(state / "run" / "api.sock"), "--json"]
    daemon = start_daemon(state, api=True)
    _wait_for(state / "run" / "api.sock")
    luoctl([*api, "qualify", "start", "--chain", f"{a},{b},{a}"], out=io.StringIO())
    daemon.process.wait(timeout=600)
    start_daemon(state).process.wait(timeout=600)
    last = start_daemon(state, api=True)
    try:
        _wait_for(state / "run" / "api.sock")
        while luoctl([*api, "qualify", "show"], out=(out := io.StringIO())) == 6:
            time.sleep(0.2)
        shown: dict[str, Any] = json.loads(out.getvalue())
        return shown
    finally:
        last.stop()


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def rows(where: str, record: dict[str, Any]) -> list[list[str]]:
    out = []
    for step in record["steps"]:
        t = step["timings"]
        checks = step["checks"]
        passed = sum(c["result"] == "pass" for c in checks)
        out.append(
            [
                where,
                f"{step['from_release']} -> {step['to_release']}",
                f"{t.get('canaries_seconds', 0):.1f} s",
                f"{t.get('kexec_seconds', 0):.1f} s",
                f"{t.get('verify_seconds', 0):.1f} s",
                f"{passed}/{len(checks)}",
            ]
        )
    if not record["steps"]:
        out.append([where, "-", "-", "-", "-", f"{record['outcome']}: {record['reason'][:60]}"])
    return out


def report() -> str:
    found: list[list[str]] = []
    for where, run in (("real kernel (VM, TCG)", vm_run), ("simulator (host)", sim_run)):
        with tempfile.TemporaryDirectory(prefix="luod-bench-qualify-") as tmp:
            try:
                record = run(Path(tmp))
            except Exception as exc:  # a bench reports what it could not measure
                found.append([where, "-", "-", "-", "-", f"not measured: {exc}"[:80]])
                continue
        RECORDS.append(record)
        found += rows(where, record)
    text = "Qualification wall time per chain step (256 MiB canary, 130 files, 16 sessions)\n"
    return text + table(["where", "step", "canaries", "kexec", "verify", "checks"], found)


if __name__ == "__main__":
    print(report())
