"""Issue-5 benchmark: does REST load slow the freeze? ``python -m bench.rest_load``

luod's REST API shares the daemon's event loop with the update driver, so every request it
serves can delay a FREEZE or a READY. This drives ``GET /v1/status`` at RATE requests/s on the
unix socket (open loop, from another process, for SECONDS) while updates run one after another
on the simulator with VMS instantly-acking VMMs, and compares the freeze barrier (first FREEZE
sent to last READY received) with and without the load.

The VMMs answer in-process (no VMM socket), so the barrier measured is luod's own scheduling:
exactly what the REST load competes with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import human, median, table
from luod.rest.app import create_app
from luod.rest.serve import serve_rest
from tests.rest.harness import FakeVmm, Luod, until

RATE, SECONDS, VMS, QUIET_RUNS, LOADED_RUNS = 500, 10.0, 100, 5, 10


class AckingVmm(FakeVmm):
    """Answers FREEZE with READY as soon as the loop lets it."""

    def __init__(self, luod: Luod, answers: set[asyncio.Task[Any]]) -> None:
        super().__init__()
        self.luod, self.answers = luod, answers

    def push(self, out: Any) -> None:
        super().push(out)
        if self.frames[-1].get("event") == "FREEZE":
            ready = {"cmd": "READY", "id": self.frames[-1]["id"]}
            task = asyncio.get_running_loop().create_task(self.luod.ask(self, ready))
            self.answers.add(task)
            task.add_done_callback(self.answers.discard)


class Switch:
    """The facade the REST app sees: the current run's luod (each update needs a fresh one,
    as a simulated kexec ends its luod)."""

    def __init__(self) -> None:
        self.target: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


async def prepared(workdir: Path, run: int) -> Luod:
    """A luod with VMS handed-over VMs whose VMMs ack at once (built before it is measured)."""
    luod = Luod(workdir / f"run{run}")
    answers: set[asyncio.Task[Any]] = set()
    for i in range(VMS):
        await luod.handover_vm(f"vm{i}")
        luod.handler.clients[f"vm{i}"] = AckingVmm(luod, answers)  # type: ignore[assignment]
    return luod


async def one_update(luod: Luod, switch: Switch) -> float:
    """Run an update to its (simulated) kexec; the freeze barrier's length in seconds."""
    switch.target = luod.facade
    try:
        await luod.ask(FakeVmm(), {"cmd": "UPDATE", "kernel": str(luod.kernel)})
        await until(lambda: luod.kexeced, timeout=60)
        assert luod.handler.driver.record is not None
        return freeze_seconds(luod.handler.driver.record.vms)
    finally:
        luod.close()


def freeze_seconds(vms: dict[str, dict[str, Any]]) -> float:
    sent = min(v["freeze_sent"]["monotonic"] for v in vms.values())
    acked = max(v["freeze_ack"]["monotonic"] for v in vms.values())
    return float(acked - sent)


async def measure(workdir: Path) -> dict[str, Any]:
    switch = Switch()
    sock = workdir / "api.sock"
    server = asyncio.create_task(
        serve_rest(create_app(switch), unix_path=sock, group=None)  # type: ignore[arg-type]
    )
    try:
        quiet = [await one_update(await prepared(workdir, r), switch) for r in range(QUIET_RUNS)]
        ready = [await prepared(workdir, QUIET_RUNS + r) for r in range(LOADED_RUNS)]
        await until(sock.exists)
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.rest_load", "--load", str(sock),
            stdout=subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # the load is running
        loaded = []
        for luod in ready:  # spread over the load's seconds
            loaded.append(await one_update(luod, switch))
            await asyncio.sleep((SECONDS - 2) / LOADED_RUNS)
        out, _ = await load.communicate()
        return {"quiet": quiet, "loaded": loaded, "load": json.loads(out)}
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


# --- the load, in its own process -------------------------------------------------------------
REQUEST = b"GET /v1/status HTTP/1.1\r\nHost: luod\r\n\r\n"
CONNECTIONS = 32


async def drive(sock: str, rate: int, seconds: float) -> dict[str, Any]:
    """Open loop: request i is due at start + i/rate; its latency counts from then (so a slow
    server cannot hide behind a slowed client). Raw HTTP/1.1 keep-alive on a few connections:
    a Python HTTP client library would be the bottleneck, not luod."""
    due: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    errors: list[str] = []
    workers = [
        asyncio.create_task(_connection(sock, due, latencies, errors)) for _ in range(CONNECTIONS)
    ]
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        due.put_nowait(at)
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    return {"latencies": latencies, "errors": len(errors), "elapsed": time.monotonic() - start}


async def _connection(
    sock: str, due: asyncio.Queue[float | None], latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        while (at := await due.get()) is not None:
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
            latencies.append(time.monotonic() - at)
    finally:
        writer.close()


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 16 luods of VMS sessions each
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(Path(tmp)))
    load = result["load"]
    served = len(load["latencies"])
    rows = [
        ["GET /v1/status", f"{served / load['elapsed']:.0f} req/s (asked {RATE})",
         human(percentile(load["latencies"], 0.5)), human(percentile(load["latencies"], 0.99)),
         f"{load['errors']} errors"],
        [f"freeze, {VMS} VMs, quiet", f"{len(result['quiet'])} updates",
         human(median(result["quiet"])), human(max(result["quiet"])), ""],
        [f"freeze, {VMS} VMs, under load", f"{len(result['loaded'])} updates",
         human(median(result["loaded"])), human(max(result["loaded"]) if result["loaded"]
                                                else float("nan")), ""],
    ]  # fmt: skip
    title = f"REST load on luod's loop (simulator, {SECONDS:.0f} s at {RATE} req/s)"
    return title + "\n" + table(["what", "count", "p50", "p99 / max", ""], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", metavar="SOCKET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(drive(args.load, RATE, SECONDS))))
        return 0
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
