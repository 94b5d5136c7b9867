"""Without systemd: the VMMs started after luod's socket appears, or together with luod (they
wait for its socket: ``--wait-for-luod``), side by side in one run of the bare TCG guest on the
real kernel (docs/operations.md §2.3).

Boot 1 starts luod and three demo VMMs (``luod-demo-vmm run``, 64 MiB + 4 KiB, 16 MiB, 8 MiB, as
in the systemd guest) and updates. Each later boot is one way of starting after the kexec, in
the order given (``--order``): ``after`` starts luod, waits until its socket answers, then runs
the three ``luod-demo-vmm reclaim``; ``together`` starts luod and the three at once. Each VMM
then hands its RAM over again and the next update follows. Measured per boot, from the stage's
start (the init's moment to start luod): when each VMM had its memory back (its
``got-memory`` stamp) and when luod took the sessions back (its record).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.stats import table
from luod.cli.moments import epoch

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "vm" / "scripts"
VMS = {"vm-a": "--ram ram0=64M --ram state=4K", "vm-b": "--ram ram0=16M", "vm-c": "--ram ram0=8M"}
WAYS = ("after", "together")

PREAMBLE = """STATE=$SHARE/luod-state
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
luoctl() { python -m tests.vm.scripts.luoctl "$@"; }
"""
HAND_OVER = "".join(
    f'luod-demo-vmm run --id {vm} {ram} --record "$SHARE/{vm}.json" '
    f'>"$SHARE/{vm}-run-$BOOT.log" 2>&1 &\n'
    for vm, ram in VMS.items()
) + "".join(f'wait_for "$SHARE/{vm}-run-$BOOT.log" handed-over\n' for vm in VMS)
UPDATE = 'luoctl update --kernel "$NEXT_KERNEL" >"$SHARE/update-$BOOT.json"\nsleep 600\n'
RECLAIMS = "".join(
    f'luod-demo-vmm reclaim --id {vm} --record "$SHARE/{vm}.json" >"$SHARE/{vm}-reclaim-$BOOT.log" '
    '2>&1 &\nPIDS="$PIDS $!"\n'
    for vm in VMS
)
START = {
    "after": "start_luod $BOOT\n" + RECLAIMS,
    "together": RECLAIMS + "start_luod $BOOT\n",
}


def stage(boot: int, way: str | None, kernel: Path, python: Path) -> str:
    head = (
        f"VENV={shlex.quote(str(python.parent.parent))}; SCRIPTS={shlex.quote(str(SCRIPTS))}\n"
        f"NEXT_KERNEL={shlex.quote(str(kernel))}; SHARE=$LUOD_VM_SHARE; BOOT={boot}\n"
        f"cd {shlex.quote(str(REPO))}\n" + PREAMBLE
    )
    if way is None:
        return head + "start_luod $BOOT\n" + HAND_OVER + UPDATE
    body = 'date +%s.%N >"$SHARE/start-$BOOT"\nPIDS=""\n' + START[way]
    body += 'for pid in $PIDS; do wait "$pid"; done\n'
    body += 'luoctl history >"$SHARE/history-$BOOT.json"\n'
    return head + body + HAND_OVER + UPDATE


def run_vm(order: tuple[str, ...], workdir: Path) -> list[dict[str, Any]]:
    from tests.vm.qemu import resolve_kernel, run_guest

    kernel = resolve_kernel()
    stages = [stage(1, None, kernel, Path(sys.executable).absolute())]
    stages += [stage(n, way, kernel, Path(sys.executable).absolute()) for n, way in
               enumerate(order, start=2)]  # fmt: skip
    result = run_guest(stages, kernel=kernel, timeout=300 + 240 * len(order), workdir=workdir)
    share, found = result.share, []
    for boot, way in enumerate(order, start=2):
        start = float((share / f"start-{boot}").read_text())
        history = json.loads((share / f"history-{boot}.json").read_text())
        record = history["history"][-1] if "history" in history else history[-1]
        got = [_got_memory(share / f"{vm}-reclaim-{boot}.log") for vm in VMS]
        found.append(
            {
                "way": way,
                "boot": boot,
                "retrieved": _moment(record["events"]["sessions_retrieved"]) - start,
                "got_memory": [g - start for g in got],
            }
        )
    return found


def _moment(value: str | float | dict[str, Any]) -> float:
    """A record's stamp: ISO text (REST), epoch seconds, or a stamp object (the VMM socket)."""
    if isinstance(value, dict):
        return float(value["realtime"])
    return epoch(value) if isinstance(value, str) else float(value)


def _got_memory(log: Path) -> float:
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"got-memory"' in line:
            return float(json.loads(line)["at"])
    raise AssertionError(f"no got-memory in {log}: {log.read_text()[-500:]}")


def render(samples: list[dict[str, Any]]) -> str:
    rows = [
        [
            f"boot {s['boot']}: {s['way']}",
            f"{s['retrieved']:.2f} s",
            f"{min(s['got_memory']):.2f}-{max(s['got_memory']):.2f} s",
            f"{statistics.median(s['got_memory']):.2f} s",
        ]
        for s in samples
    ]
    header = ["after the kexec, from the init's start of luod", "luod took the sessions back",
              "VMMs had their memory", "median"]  # fmt: skip
    return (
        "VMMs started after luod's socket answers, or with luod (bare TCG guest, real kernel)\n"
        + table(header, rows)
    )


ORDER = ("after", "together", "together", "after")  # ABBA: each way once early, once late


def report(order: tuple[str, ...] = ORDER) -> str:
    with tempfile.TemporaryDirectory() as workdir:
        return render(run_vm(order, Path(workdir)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--order", default=",".join(ORDER), help="e.g. together,after")
    args = parser.parse_args()
    order = tuple(args.order.split(","))
    if any(way not in WAYS for way in order):
        parser.error(f"--order: each of {WAYS}")
    print(report(order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
