"""``make run``: the whole product in one go, on a real LUO kernel under QEMU.

Boots the LUO test kernel, starts luod, two demo VMMs and a real QEMU guest under luod-qemu
(a boot sector that counts in RAM, nested TCG), runs ``luoctl update start`` with ``luoctl
update watch`` live on the console, kexecs, and after the reboot prints every demo VM's reclaim
result (sha256 of each region, checked against what the VMM recorded at FREEZE), the QEMU
guest's counter before and after the update and its pause, and the blackout timeline.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from luod.cli import render
from tests.vm.qemu import qemu_command, resolve_kernel, write_share

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
VMS = ("vm-a", "vm-c")  # demo VMMs; vm-q is the QEMU guest
TIMEOUT = 600  # a loaded machine (TCG is CPU-bound); about 2-3 minutes when idle


def stage(script: str, kernel: Path) -> str:
    venv = Path(sys.executable).parent.parent
    return (
        f"VENV={shlex.quote(str(venv))}; SCRIPTS={shlex.quote(str(SCRIPTS))}\n"
        f"NEXT_KERNEL={shlex.quote(str(kernel))}; SHARE=$LUOD_VM_SHARE\n"
        f"cd {shlex.quote(str(REPO))}\n. {shlex.quote(str(SCRIPTS / script))}\n"
    )


def boot(kernel: Path, share: Path) -> int:
    command = qemu_command(kernel, share, "2G", "quiet loglevel=1")
    print(f"booting {kernel.name} under QEMU (TCG); the guest's console follows\n", flush=True)
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, timeout=TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        print(f"\nmake run: the guest did not finish within {TIMEOUT} s", file=sys.stderr)
        return 1


def summary(share: Path) -> int:
    print("\n== reclaim results (sha256 per region, against the VMM's record at FREEZE)")
    ok = True
    for vm in VMS:
        lines = (
            (share / f"{vm}-reclaim.log").read_text().splitlines()
            if (share / f"{vm}-reclaim.log").exists()
            else []
        )
        result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        ok &= result.get("event") == "verified"
        for name, digest in result.get("sha256", {}).items():
            mark = "match" if result["files"].get(name) else "MISMATCH"
            print(f"  {vm:6} {name:6} {digest}  {mark}")
        if not result:
            print(f"  {vm:6} no result (see {share / (vm + '-reclaim.log')})")
    ok &= qemu_summary(share)
    history = (
        json.loads((share / "history.json").read_text())["history"]
        if (share / "history.json").exists()
        else []
    )
    if history:
        print("\n== blackout per VM (freeze ack -> done, across the kexec), as luoctl shows it")
        print("\n".join(render.blackout(history[-1], split=True)))
    return 0 if ok and history else 1


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def qemu_summary(share: Path) -> bool:
    """vm-q, the QEMU guest: its counter went on (never reset), its pattern is intact."""
    print("\n== vm-q, a QEMU guest (luod-qemu): its RAM before and after the update")
    before, after, later = (
        load(share / f"vm-q-{n}.json") for n in ("running", "after-1", "after-2")
    )
    report = share / "vm-q-report.jsonl"
    reports = report.read_text().splitlines() if report.exists() else []
    restored: dict[str, Any] = next((json.loads(r) for r in reports if '"restored"' in r), {})
    if not (before and after and later and restored):
        print(f"  no result (see {share / 'vm-q-run-2.log'})")
        return False
    same: bool = (
        before["stamp"] == later["stamp"] and before["pattern_sha256"] == later["pattern_sha256"]
    )
    went_on: bool = later["counter"] > after["counter"] >= before["counter"]
    print(f"  counter before the update  {before['counter']:#010x}")
    print(f"  counter after it           {after['counter']:#010x}, "
          f"1 s later {later['counter']:#010x}")  # fmt: skip
    print(f"  boot stamp and pattern     {'unchanged' if same else 'CHANGED'}: "
          f"{'never reset' if same and went_on else 'RESET OR LOST'}")  # fmt: skip
    before_kexec = restored["before_kexec"]
    print(f"  freeze                     QMP stop {before_kexec['stopped'] * 1000:.0f} ms, "
          f"state saved {before_kexec['state_saved'] * 1000:.0f} ms, preserved "
          f"{before_kexec['preserved'] * 1000:.0f} ms (from stop)")  # fmt: skip
    steps = restored["after_kexec"]
    print(f"  guest-visible pause        {restored['pause']:.2f} s (QMP stop -> cont), of which "
          f"kexec + boot {restored['reboot']:.2f} s")  # fmt: skip
    print(f"  device state               {restored['state_bytes'] / 1024:.0f} KiB; restore: "
          f"reclaim {steps['reclaimed']:.2f} s, QEMU up {steps['qemu_started']:.2f} s, "
          f"state loaded {steps['state_loaded']:.2f} s, cont {steps['cont']:.2f} s "
          "(from luod-qemu's exec)")  # fmt: skip
    return same and went_on


def main() -> int:
    started = time.monotonic()
    kernel = resolve_kernel()
    with tempfile.TemporaryDirectory(prefix="luod-run-") as tmp:
        share = Path(tmp) / "share"
        write_share(share, [stage(f"showcase-{n}.sh", kernel) for n in (1, 2)], {})
        boot(kernel, share)
        code = summary(share)
    print(f"\nmake run: {'done' if code == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
