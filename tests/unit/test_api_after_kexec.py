"""After a kexec luod starts its REST API once the update that crossed it has ended (every VM
reclaimed and DONE), at most ``API_WAIT_AFTER_KEXEC`` after it serves: the REST stack's import
is CPU, holding luod's GIL, that the VMMs restoring their VMs need more (measured with real QEMU
VMs, bench/NOTES.md). On any other start it serves at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from luod.core.access import AccessPolicy
from luod.core.orchestrator import Phase
from luod.custody.memory import MemoryCustody
from luod.daemon import daemon as daemon_module
from luod.daemon import process_start
from luod.daemon.daemon import Daemon
from luod.daemon.settings import ApiSettings, Settings
from luod.kernel import open_backend
from luod.vmm.client import Client
from tests.rest.harness import Luod, until

pytestmark = pytest.mark.unit


class Api:
    """Stands in for luod.rest.serving.serve_api: notes when it started, and the phase then."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.phase: Phase | None = None

    async def __call__(self, *args: Any) -> None:  # (registry, driver, events, settings, ...)
        self.started = time.monotonic()
        self.phase = args[1].machine.phase
        await asyncio.Event().wait()  # serves until cancelled


async def kexeced(state: Path) -> None:
    """vm1 handed over and frozen, then the (simulated) kexec: the next luod reclaims it."""
    before = Luod(state)
    await before.kexec({"vm1": await before.handover_vm("vm1")})
    before.die()


@contextlib.asynccontextmanager
async def next_luod(state: Path, api: Api) -> AsyncIterator[Daemon]:
    """luod on ``state`` with ``api`` plugged in, serving; stopped (within 5 s) on the way out."""
    settings = Settings.simulated(
        state, access=AccessPolicy.default(), api=ApiSettings(state / "api.sock")
    )
    backend = open_backend(state / "kernel")
    daemon = Daemon(settings, backend=backend, custody=MemoryCustody(), api=api)
    running = asyncio.create_task(daemon.run())
    await until(lambda: settings.socket_path.exists())
    try:
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(running, 5)


def reclaim(socket: Path, done: bool) -> None:
    """vm1's VMM after the kexec: RECLAIM, and DONE when ``done``."""
    with Client(socket) as vmm:
        for fd in vmm.reclaim("vm1").values():
            fd.close()
        if done:
            vmm.done("vm1")


def test_after_a_kexec_the_api_starts_once_every_vm_is_done(tmp_path: Path) -> None:
    api = Api()

    async def scenario() -> float:
        await kexeced(tmp_path)
        async with next_luod(tmp_path, api) as daemon:
            await asyncio.sleep(0.5)
            assert api.started is None, "the REST stack started while vm1 was still reclaimed"
            await asyncio.to_thread(reclaim, daemon.settings.socket_path, True)
            done = time.monotonic()
            await until(lambda: api.started is not None)
        return done

    done = asyncio.run(scenario())
    assert api.started is not None and api.started - done < 1.0
    assert api.phase is Phase.IDLE  # the update had ended


def test_after_a_kexec_the_api_waits_at_most_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM whose VMM never comes back keeps the update in `reclaiming` for its whole grace
    period: the API starts at the bound all the same."""
    monkeypatch.setattr(daemon_module, "API_WAIT_AFTER_KEXEC", 0.3)
    monkeypatch.setattr(daemon_module, "API_WAIT_STARTS", 0.0)
    api = Api()

    async def scenario() -> float:
        await kexeced(tmp_path)
        async with next_luod(tmp_path, api):
            serving = time.monotonic()
            await until(lambda: api.started is not None, timeout=5)
        return serving

    serving = asyncio.run(scenario())
    assert api.started is not None and 0.2 <= api.started - serving < 2.0
    assert api.phase is Phase.RECLAIMING


def test_luod_stopped_while_the_api_waits_exits_without_starting_it(tmp_path: Path) -> None:
    """A stop during the wait (here vm1 reclaimed, not DONE) cancels the REST start; a REST
    stack started while luod stops would keep it from exiting (next_luod allows 5 s)."""
    api = Api()

    async def scenario() -> None:
        await kexeced(tmp_path)
        async with next_luod(tmp_path, api) as daemon:
            await asyncio.to_thread(reclaim, daemon.settings.socket_path, False)
        await asyncio.sleep(0.2)  # nothing left to start it

    asyncio.run(scenario())
    assert api.started is None


def test_on_any_other_start_the_api_starts_at_once(tmp_path: Path) -> None:
    api = Api()

    async def scenario() -> float:
        async with next_luod(tmp_path, api):
            serving = time.monotonic()
            await until(lambda: api.started is not None, timeout=5)
        return serving

    serving = asyncio.run(scenario())
    assert api.started is not None and api.started - serving < 0.5


def test_the_bound_grows_with_luods_own_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three times exec -> now, never below API_WAIT_AFTER_KEXEC nor above API_WAIT_CAP."""
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    for own, bound in ((1.0, 5.0), (4.0, 12.0), (100.0, 20.0)):
        monkeypatch.setattr(process_start, "since_boot", lambda o=own: now - o)
        assert daemon_module.api_wait_after_kexec() == pytest.approx(bound, abs=0.5)
    monkeypatch.setattr(process_start, "since_boot", lambda: None)  # no /proc
    assert daemon_module.api_wait_after_kexec() == daemon_module.API_WAIT_AFTER_KEXEC
