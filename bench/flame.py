"""Flame graphs of luod (py-spy, simulator, this host), so that the next regression is found in
minutes: its start-up after a kexec up to the first RECLAIM served, and one update of 100 VMs
from the request to the kexec. SVGs in build/bench/ (py-spy's flamegraph format: open in a
browser, click to zoom)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import handover
from bench.blackout_budget import Vmm
from luod.errors import LuodError
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench"
RATE = "2000"  # samples per second
VMS = 100


def py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def record(output: Path, state: Path) -> subprocess.Popen[bytes]:
    spy = py_spy()
    assert spy is not None
    command = [spy, "record", "--rate", RATE, "--format", "flamegraph", "--output", str(output)]
    command += ["--nonblocking", "--", sys.executable, "-m", "luod"]
    command += ["--simulate", str(state), "--no-api"]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def luod_child(spy: subprocess.Popen[bytes]) -> int:
    """The pid of the luod py-spy started (its only child)."""
    children = Path(f"/proc/{spy.pid}/task/{spy.pid}/children")
    for _ in range(2000):
        with contextlib.suppress(OSError, ValueError):
            return int(children.read_text().split()[0])
        asyncio.run(asyncio.sleep(0.005))
    raise TimeoutError("py-spy started no luod")


def startup(workdir: Path) -> Path:
    workdir.mkdir(parents=True)
    template = handover.prepared_state(workdir)
    state = workdir / "start"
    shutil.copytree(template, state, symlinks=True)
    (state / "run" / "liveupdate.sock").unlink(missing_ok=True)
    output = OUT / "flame-startup.svg"
    spy = record(output, state)
    handover.wait_for_socket(state / "run" / "liveupdate.sock")
    with Client(state / "run" / "liveupdate.sock") as client:
        for fd in client.reclaim("vm1").values():
            fd.close()
    os.kill(luod_child(spy), signal.SIGTERM)
    spy.wait(60)
    return output


async def one_update(state: Path, image: Path) -> None:
    socket = state / "run" / "liveupdate.sock"
    await asyncio.to_thread(handover.wait_for_socket, socket)
    vmms = [Vmm(f"vm{i}") for i in range(VMS)]
    registered, left = asyncio.Event(), [v.vm for v in vmms]
    holding = [asyncio.create_task(v.hand_over(socket, registered, left)) for v in vmms]
    await asyncio.wait_for(registered.wait(), 120)
    with Client(socket) as operator, contextlib.suppress(LuodError, ConnectionError, OSError):
        await asyncio.to_thread(operator.update, image, wait=True)
    for task in holding:
        task.cancel()
    await asyncio.gather(*holding, return_exceptions=True)


def update(workdir: Path) -> Path:
    workdir.mkdir(parents=True)
    image = workdir / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    output = OUT / "flame-update.svg"
    spy = record(output, workdir / "update")
    asyncio.run(one_update(workdir / "update", image))
    spy.wait(60)  # the simulated kexec ends luod, and py-spy with it
    return output


def report() -> str:
    if py_spy() is None:
        return "Flame graphs: py-spy is not installed (pip install py-spy), none made"
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [startup(Path(tmp) / "a"), update(Path(tmp) / "b")]
    return "Flame graphs (py-spy): " + ", ".join(
        f"{os.path.relpath(p, REPO)} ({p.stat().st_size // 1024} KiB)" for p in paths
    )


if __name__ == "__main__":
    print(report())
