"""``make run``: the whole product in one go, on a real LUO kernel under QEMU.

Boots the LUO test kernel, starts luod and three demo VMMs, runs ``luoctl update start`` with
``luoctl update watch`` live on the console, kexecs, and after the reboot prints every VM's
reclaim result (sha256 of each region, checked against what the VMM recorded at FREEZE) and
the blackout timeline.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.vm.qemu import qemu_command, resolve_kernel, write_share

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
VMS = ("vm-a", "vm-b", "vm-c")
TIMEOUT = 300


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
    history = (
        json.loads((share / "history.json").read_text())["history"]
        if (share / "history.json").exists()
        else []
    )
    if history:
        print("\n== blackout per VM (freeze ack -> done, across the kexec)")
        for vm, seconds in sorted(history[-1]["blackout_seconds"].items()):
            print(f"  {vm:6} {seconds:.2f} s")
    return 0 if ok and history else 1


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
