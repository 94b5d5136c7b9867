"""The blackout budget: each VM's pause split into its six parts, for 1, 10 and 100 VMs.

1. FREEZE sent -> READY (the VMM pauses);
2. last READY -> reboot() (luod's pre-reboot part; on the simulator: until the simulated
   kernel has written its handover, the file's mtime);
3. reboot() -> luod exec (the kernel's part; none on the simulator, whose "kexec" is luod
   exiting and the bench starting it again at once);
4. exec -> sessions retrieved (luod's start-up);
5. retrieved -> RECLAIM sent by this VM (luod serving, the VMM connecting; luod stamps
   "sessions retrieved" as its main loop starts, after its socket is bound, so a VMM that
   connects into the backlog can send RECLAIM a little before: a negative part 5);
6. RECLAIM -> the VM's DONE.

Measured on the simulator on this host, with VMMs as asyncio clients of luod's socket in this
process (luod.vmm.client.AsyncClient: register, preserve 4 KiB, READY on FREEZE, reconnect,
RECLAIM, DONE), ROUNDS runs per VM count; median and p99 over every VM of every run. luod's
parts (2, 4, 5) are also shown against a bare ``python3 -c pass`` timed in the same run. The
parts are plotted as stacked bars (median) per VM count into build/bench/ (SVG and PNG).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.handover import wait_for_socket
from bench.startup import BARE, run_once
from bench.stats import human, table
from luod.errors import LuodError
from luod.kernel import memfd
from luod.vmm.client import AsyncClient, Client
from tests.contract.harness import FAKE_BZIMAGE

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench"
COUNTS = (1, 10, 100)
ROUNDS = 3
PARTS = (
    "1 FREEZE -> READY",
    "2 last READY -> reboot",
    "3 kernel",
    "4 exec -> retrieved",
    "5 retrieved -> RECLAIM",
    "6 RECLAIM -> DONE",
)
LUODS_OWN = (1, 3, 4)  # indexes of parts 2, 4 and 5


class Vmm:
    """One VMM: hands over, answers FREEZE, then (new luod) reclaims and sends DONE."""

    def __init__(self, vm: str) -> None:
        self.vm = vm
        self.frozen = asyncio.Event()
        self.reclaim_sent = 0.0
        self.done = 0.0

    async def hand_over(self, socket: Path, registered: asyncio.Event, left: list[str]) -> None:
        client = AsyncClient(socket)
        try:
            await client.connect()
            with memfd.create(self.vm, 4096) as fd:
                await client.register(self.vm)
                await client.preserve(self.vm, {"ram0": fd})
            left.remove(self.vm)
            if not left:
                registered.set()
            if await client.wait_event("FREEZE") is not None:
                await client.ready(self.vm)
                self.frozen.set()
            await asyncio.sleep(60)  # luod's "kexec" ends this connection
        except (LuodError, ConnectionError, OSError):
            pass
        finally:
            client.close()

    async def reclaim(self, socket: Path, serving: asyncio.Event) -> None:
        await serving.wait()
        client = AsyncClient(socket)
        try:
            await client.connect()
            self.reclaim_sent = time.time()
            for fd in (await client.reclaim(self.vm)).values():
                fd.close()
            await client.done(self.vm)
            self.done = time.time()
        finally:
            client.close()


def spawn(state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "luod.main", "--simulate", str(state), "--no-api"],
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )


async def one_update(workdir: Path, count: int) -> dict[str, Any]:
    state, image = workdir / "luod", workdir / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    socket = state / "run" / "liveupdate.sock"
    old = spawn(state)
    await asyncio.to_thread(wait_for_socket, socket)
    vmms = [Vmm(f"vm{i}") for i in range(count)]
    registered, left = asyncio.Event(), [v.vm for v in vmms]
    holding = [asyncio.create_task(v.hand_over(socket, registered, left)) for v in vmms]
    await asyncio.wait_for(registered.wait(), 120)
    with Client(socket) as operator, contextlib.suppress(LuodError, ConnectionError, OSError):
        await asyncio.to_thread(operator.update, image, wait=True)
    await asyncio.to_thread(old.wait, 30)
    rebooted = (state / "kernel" / "handover" / "handover.json").stat().st_mtime
    for task in holding:
        task.cancel()
    await asyncio.gather(*holding, return_exceptions=True)
    with contextlib.suppress(FileNotFoundError):
        socket.unlink()
    started = time.time()
    new = spawn(state)
    try:
        serving = asyncio.Event()  # one poller for all VMMs: 100 pollers would steal luod's CPU
        reclaims = asyncio.gather(*(v.reclaim(socket, serving) for v in vmms))
        while not socket.exists():
            await asyncio.sleep(0.0005)
        serving.set()
        await asyncio.wait_for(reclaims, 120)
    finally:
        new.terminate()
        await asyncio.to_thread(new.wait, 10)
    record = json.loads((state / "history.jsonl").read_text().splitlines()[-1])
    return {"record": record, "rebooted": rebooted, "exec": started, "vmms": vmms}


def parts_of(run: dict[str, Any]) -> list[list[float | None]]:
    """Per VM, the six parts in seconds (None where the simulator has no such part)."""
    record = run["record"]
    vms = record["vms"]
    last_ready = max(v["freeze_ack"]["realtime"] for v in vms.values())
    retrieved = record["events"]["sessions_retrieved"]["realtime"]
    out: list[list[float | None]] = []
    for vmm in run["vmms"]:
        stamps = vms[vmm.vm]
        out.append(
            [
                stamps["freeze_ack"]["realtime"] - stamps["freeze_sent"]["realtime"],
                run["rebooted"] - last_ready,
                None,
                retrieved - run["exec"],
                vmm.reclaim_sent - retrieved,
                vmm.done - vmm.reclaim_sent,
            ]
        )
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def fan_out(run: dict[str, Any]) -> float:
    """The last VM's RECLAIM after the first's."""
    sent = [vmm.reclaim_sent for vmm in run["vmms"]]
    return max(sent) - min(sent)


def first_reclaim(run: dict[str, Any]) -> float:
    """luod's exec -> the first RECLAIM sent (parts 4 + 5 of the first VM)."""
    return min(vmm.reclaim_sent for vmm in run["vmms"]) - float(run["exec"])


class Measures:
    def __init__(self) -> None:
        self.parts: dict[int, list[list[float | None]]] = {}
        self.fan_out: dict[int, list[float]] = {}
        self.first: list[float] = []
        self.bare: list[float] = []


def measure() -> Measures:
    found = Measures()
    for count in COUNTS:
        rows: list[list[float | None]] = []
        fans = []
        for _ in range(ROUNDS):
            with tempfile.TemporaryDirectory() as tmp:
                run = asyncio.run(one_update(Path(tmp), count))
            rows += parts_of(run)
            fans.append(fan_out(run))
            found.first.append(first_reclaim(run))
            found.bare.append(run_once(BARE))
        found.parts[count], found.fan_out[count] = rows, fans
    return found


def summary(rows: list[list[float | None]], index: int) -> tuple[float, float] | None:
    values = [row[index] for row in rows if row[index] is not None]
    if not values:
        return None
    numbers = [float(v) for v in values if v is not None]
    return statistics.median(numbers), p99(numbers)


def plot(per_count: dict[int, list[list[float | None]]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4))
    labels = [f"{count} VM" + ("s" if count > 1 else "") for count in per_count]
    bottoms = [0.0] * len(per_count)
    for index, part in enumerate(PARTS):
        heights = []
        for rows in per_count.values():
            found = summary(rows, index)
            heights.append(max(found[0], 0.0) * 1e3 if found else 0.0)
        axes.bar(labels, heights, bottom=bottoms, label=part)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    axes.set_ylabel("ms per VM (median)")
    axes.set_title("Blackout budget per VM (simulator, this host)")
    axes.legend(fontsize="small")
    OUT.mkdir(parents=True, exist_ok=True)
    paths = [OUT / "blackout_budget.svg", OUT / "blackout_budget.png"]
    for path in paths:
        figure.savefig(path)
    pyplot.close(figure)
    return paths


def targets(found: Measures, python: float) -> str:
    """Issue 17 §2's targets that this bench measures, PASS or MISS."""
    most = max(COUNTS)
    pre_reboot = summary(found.parts[most], 1)
    fan = statistics.median(found.fan_out[most])
    first = statistics.median(found.first) / python
    lines = [
        [f"pre-reboot part (2) at {most} VMs", human(pre_reboot[0]) if pre_reboot else "-"],
        [f"reclaim fan-out at {most} VMs (last RECLAIM - first)", human(fan)],
        ["exec -> first RECLAIM / python3 -c pass", f"{first:.2f}"],
    ]
    limits = [(pre_reboot[0] if pre_reboot else float("inf"), 5e-3), (fan, 20e-3), (first, 3.0)]
    shown = ["<= 5 ms", "<= 20 ms", "<= 3"]
    rows = [
        [*line, limit, "PASS" if value <= bound else "MISS"]
        for line, limit, (value, bound) in zip(lines, shown, limits, strict=True)
    ]
    return table(["target", "measure", "target", ""], rows)


def report() -> str:
    measures = measure()
    per_count = measures.parts
    python = statistics.median(measures.bare)
    rows = []
    for count, parts in per_count.items():
        for index, part in enumerate(PARTS):
            found = summary(parts, index)
            if found is None:
                rows.append([str(count), part, "-", "-", "-"])
                continue
            median, tail = found
            versus = f"{median / python:.2f}" if index in LUODS_OWN else ""
            rows.append([str(count), part, human(median), human(tail), versus])
    header = ["VMs", "part (per VM)", "median", "p99", "/ python3 -c pass"]
    paths = plot(per_count)
    return (
        f"Blackout budget (simulator, this host, {ROUNDS} runs; python3 -c pass: "
        f"{human(python)}; the kernel's part 3 exists only in the VM)\n"
        + table(header, rows)
        + "\nplot: "
        + ", ".join(os.path.relpath(p, REPO) for p in paths)
        + "\n\n"
        + targets(measures, python)
    )


if __name__ == "__main__":
    print(report())
