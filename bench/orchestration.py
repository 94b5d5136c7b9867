"""Issue-4 benchmarks (simulator, this host): the freeze barrier with 100 instantly-acking
clients, and taking back 2000 sessions after a simulated kexec."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from bench.handover import daemon, spawn_simulated, wait_for_socket
from bench.stats import human, table
from luod.core import manifest
from luod.errors import LuodError
from luod.kernel import memfd
from luod.vmm.client import AsyncClient, Client
from tests.contract.harness import FAKE_BZIMAGE

CLIENTS = 100
SESSIONS = 1000  # issue 17: the kernel's practical limit; exec -> serving <= 200 ms


async def instant_vmm(socket: Path, vm: str, registered: asyncio.Event, count: list[int]) -> None:
    client = AsyncClient(socket)
    try:
        await client.connect()
        with memfd.create(vm, 4096) as fd:
            await client.register(vm)
            await client.preserve(vm, {"ram0": fd})
        count.append(1)
        if len(count) == CLIENTS:
            registered.set()
        event = await client.wait_event("FREEZE")
        if event is not None:
            await client.ready(vm)
        await asyncio.sleep(30)  # the simulated kexec ends luod, and this connection
    except (LuodError, ConnectionError, OSError):
        pass
    finally:
        client.close()


async def freeze_run(socket: Path, image: Path) -> None:
    registered, count = asyncio.Event(), []
    vmms = [
        asyncio.create_task(instant_vmm(socket, f"vm{i}", registered, count))
        for i in range(CLIENTS)
    ]
    await asyncio.wait_for(registered.wait(), 120)
    with Client(socket) as operator, contextlib.suppress(LuodError, ConnectionError, OSError):
        await asyncio.to_thread(operator.update, image, wait=True)
    for task in vmms:
        task.cancel()
    await asyncio.gather(*vmms, return_exceptions=True)


def freeze_barrier(workdir: Path) -> float:
    image = workdir / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    state = workdir / "freeze"
    with daemon(state) as socket:
        asyncio.run(freeze_run(socket, image))
    handed_over = manifest.read_disk(state)  # the snapshot and the journal's kexec line
    assert handed_over is not None
    update = handed_over.extra["update"]
    sent = min(v["freeze_sent"]["monotonic"] for v in update["vms"].values())
    acked = max(v["freeze_ack"]["monotonic"] for v in update["vms"].values())
    return acked - sent


def reclaim_sessions(workdir: Path) -> tuple[float, float]:
    image = workdir / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    state = workdir / "many"
    with daemon(state) as socket:
        with Client(socket) as vmm:  # then gone: luod holds the sessions, nothing to freeze
            for i in range(SESSIONS):
                vmm.register(f"vm{i}")
                with memfd.create("ram", 4096) as fd:
                    vmm.preserve(f"vm{i}", {"ram0": fd})
        client = Client(socket)
        with client, contextlib.suppress(LuodError, ConnectionError, OSError):
            client.update(image, wait=True)
    time.sleep(0.5)
    socket = state / "run" / "liveupdate.sock"
    started = time.perf_counter()
    process = spawn_simulated(state)
    try:
        wait_for_socket(socket)
        serving = time.perf_counter() - started
        with Client(socket) as client:
            begun = time.perf_counter()
            for i in range(SESSIONS):
                for fd in client.reclaim(f"vm{i}").values():
                    fd.close()
                client.done(f"vm{i}")
            reclaimed = time.perf_counter() - begun
    finally:
        process.terminate()
        process.wait(10)
    return serving, reclaimed


def report() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        barrier = freeze_barrier(workdir)
        serving, reclaimed = reclaim_sessions(workdir)
    rows = [
        [
            f"freeze barrier, {CLIENTS} instant clients (FREEZE sent -> last READY)",
            human(barrier),
            "<= 50 ms",
            "PASS" if barrier <= 0.05 else "MISS",
        ],
        [
            f"exec -> serving with {SESSIONS} sessions retrieved",
            human(serving),
            "<= 200 ms",
            "PASS" if serving <= 0.2 else "MISS",
        ],
        [f"RECLAIM + DONE of {SESSIONS} VMs, one client", human(reclaimed), "-", ""],
    ]
    return "Update orchestration (simulator, this host)\n" + table(
        ["measure", "value", "target", ""], rows
    )


if __name__ == "__main__":
    print(report())
