"""After a kexec luod starts its REST API once the update that crossed it has ended (every VM
reclaimed and done), at most ``API_WAIT_AFTER_KEXEC`` later: the REST stack's import is CPU
that the reclaiming VMMs need more (measured in the systemd guest, bench/NOTES.md). On any
other start it serves at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from luod.daemon import daemon as daemon_module
from luod.daemon.daemon import Daemon
from luod.daemon.events import EventBus
from luod.daemon.settings import ApiSettings, Settings

pytestmark = pytest.mark.unit


class Api:
    """Stands in for luod.rest.serving.serve_api: notes when it was started, and with what."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.delay: float | None = None

    async def __call__(self, *args: Any) -> None:
        self.started = time.monotonic()
        self.delay = args[4]


def daemon_with(api: Api, tmp_path: Path) -> Daemon:
    settings = Settings.simulated(tmp_path, api=ApiSettings(tmp_path / "api.sock"))
    daemon = Daemon(settings, api=api)
    daemon.events = EventBus()  # what _wire() builds; the rest is passed through untouched
    daemon.registry = daemon.driver = daemon.qualifications = None  # type: ignore[assignment]
    return daemon


def test_after_a_kexec_the_api_waits_for_the_update_end(tmp_path: Path) -> None:
    api = Api()
    daemon = daemon_with(api, tmp_path)

    async def scenario() -> float:
        serving = asyncio.create_task(daemon._serve_api(api, daemon._update_ended(), 60.0))
        await asyncio.sleep(0.2)
        assert api.started is None, "the REST stack started while VMs were still reclaiming"
        daemon.events.publish({"event": "UPDATE_END", "id": "u1", "outcome": "completed"})
        ended = time.monotonic()
        await asyncio.wait_for(serving, 5)
        return ended

    ended = asyncio.run(scenario())
    assert api.started is not None and api.started - ended < 1.0 and api.delay == 0.0


def test_after_a_kexec_the_api_waits_at_most_the_bound(tmp_path: Path) -> None:
    api = Api()
    daemon = daemon_with(api, tmp_path)

    async def scenario() -> float:
        began = time.monotonic()
        await asyncio.wait_for(daemon._serve_api(api, daemon._update_ended(), 0.3), 5)
        return began

    began = asyncio.run(scenario())  # no UPDATE_END: a VM that never comes back
    assert api.started is not None and 0.3 <= api.started - began < 3.0


def test_other_starts_serve_the_api_at_once(tmp_path: Path) -> None:
    api = Api()
    daemon = daemon_with(api, tmp_path)
    began = time.monotonic()
    asyncio.run(daemon._serve_api(api, None, 60.0))
    assert api.started is not None and api.started - began < 1.0


def test_the_bound_is_luods_own_start_on_a_slow_machine() -> None:
    """seconds_since_exec: this test process's age, from the kernel's process start time."""
    age = daemon_module.seconds_since_exec()
    assert 0 < age < 3600
    time.sleep(0.1)
    assert daemon_module.seconds_since_exec() - age >= 0.09
