"""A VM's reclaim, RECLAIM sent -> the VM's DONE, and what luod spends on each VM. (This was
the blackout budget's part 6 until the sixteenth session; bench.blackout_budget now ends part 5
at luod's answer, so this span is the answer's share of part 5 and all of part 6.)

bench.blackout_budget's update on the simulator (VMMs hand over, FREEZE/READY, the simulated
kexec), then the next luod starts and, SETTLE seconds after it serves (its start-up done), every
VMM reclaims and sends DONE at once. Per run: part 6's median and p99 over the VMs; luod's CPU
(utime + stime of /proc/PID/stat, its simulator's thread included) from the first RECLAIM to the
last DONE, over the VMs (/proc counts in clock ticks, 10 ms: 100 VMs or more); and that
span's wall time over the VMs. ``--baseline TREE`` runs another source tree's luod interleaved
with this one's, run by run (the same load).

    python -m bench.reclaim_cost --vms 100 1000 --runs 10 --baseline /tmp/main
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.blackout_budget import REPO, Vmm, p99, spawn, updated
from bench.stats import human, table

COUNTS = (100, 1000)
RUNS = 3
SETTLE = 0.3  # seconds after the new luod serves before the VMMs reclaim
TICK = os.sysconf("SC_CLK_TCK")
COLUMNS = ("part 6 median", "part 6 p99", "luod CPU a VM", "first RECLAIM -> last DONE, a VM")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def one_run(workdir: Path, count: int, tree: Path) -> tuple[float, float, float, float]:
    """One update of ``count`` VMs, then their reclaim: the four COLUMNS, in seconds."""
    state, socket, vmms = await updated(workdir, count, tree, workdir / "old-luod.log")
    new = spawn(state, tree)
    try:
        return await _reclaim(vmms, socket, new)
    finally:
        await _ended(new)


async def _reclaim(
    vmms: list[Vmm], socket: Path, luod: subprocess.Popen[bytes]
) -> tuple[float, float, float, float]:
    serving = asyncio.Event()
    reclaims = asyncio.gather(*(vmm.reclaim(socket, serving) for vmm in vmms))
    while not socket.exists():
        await asyncio.sleep(0.0005)
    await asyncio.sleep(SETTLE)
    before = cpu_seconds(luod.pid)
    serving.set()
    await asyncio.wait_for(reclaims, 120)
    spent = cpu_seconds(luod.pid) - before
    part6 = [vmm.done - vmm.reclaim_sent for vmm in vmms]
    span = max(v.done for v in vmms) - min(v.reclaim_sent for v in vmms)
    return statistics.median(part6), p99(part6), spent / len(vmms), span / len(vmms)


async def _ended(luod: subprocess.Popen[bytes]) -> None:
    if luod.poll() is None:
        luod.terminate()
        await asyncio.to_thread(luod.wait, 10)


def measure(trees: dict[str, Path], count: int, runs: int) -> dict[str, list[list[float]]]:
    found: dict[str, list[list[float]]] = {name: [] for name in trees}
    for _ in range(runs):
        for name, tree in trees.items():
            with tempfile.TemporaryDirectory() as tmp:
                found[name].append(list(asyncio.run(one_run(Path(tmp), count, tree))))
    return found


def report(counts: tuple[int, ...] = COUNTS, runs: int = RUNS, baseline: Path | None = None) -> str:
    trees = {"this tree": REPO, **({f"baseline {baseline}": baseline} if baseline else {})}
    rows = []
    for count in counts:
        started = time.monotonic()
        for name, per_run in measure(trees, count, runs).items():
            medians = [statistics.median(column) for column in zip(*per_run, strict=True)]
            rows.append([str(count), name, *(human(m) for m in medians)])
        rows.append(["", f"({runs} runs each, {time.monotonic() - started:.0f} s)", *[""] * 4])
    header = ["VMs", "tree", *COLUMNS]
    return (
        f"RECLAIM -> DONE on the simulator (medians over runs; load {os.getloadavg()[0]:.1f})\n"
        + table(header, rows)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="another source tree's luod, side by side")
    parser.add_argument("--vms", type=int, nargs="+", default=COUNTS, help=f"default {COUNTS}")
    parser.add_argument("--runs", type=int, default=RUNS, help="runs per tree and VM count")
    args = parser.parse_args()
    print(report(tuple(args.vms), args.runs, args.baseline))
