"""luod watches its REST worker (luod.rest.serving.Worker): a worker that fails is started
again after a pause that grows, one that says its configuration is unusable is not, and a
worker that cannot even start costs the API only."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from luod.core.access import AccessPolicy
from luod.daemon.settings import ApiSettings
from luod.rest import link, serving

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


class Port:
    def read(self, name: str) -> dict[str, Any]:
        return {"phase": "idle", "update": None}


def worker(tmp_path: Path) -> serving.Worker:
    hello = serving.hello(ApiSettings(tmp_path / "api.sock"), tmp_path, AccessPolicy())
    return serving.Worker(Port(), hello)


def fake_python(tmp_path: Path, status: int) -> str:
    """An 'interpreter' that reads its hello and exits with ``status``."""
    script = tmp_path / f"exit{status}"
    script.write_text(f"#!/bin/sh\nexit {status}\n")
    script.chmod(0o755)
    return str(script)


async def test_a_worker_that_fails_is_started_again_after_a_growing_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, 1))
    monkeypatch.setattr(serving, "RESTART_FIRST", 0.01)
    supervisor = worker(tmp_path)
    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.supervise(None))
        async with asyncio.timeout(20):
            while supervisor.started < 3:
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    exits = [e for e in logs if e["event"] == "rest-worker-exited"]
    assert [e["status"] for e in exits[:2]] == [1, 1]
    assert exits[1]["restart_in"] == 2 * exits[0]["restart_in"]
    assert all(e["code"] == "rest-worker" and e["hint"] for e in exits)


async def test_a_worker_that_says_its_configuration_is_unusable_stays_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, link.EXIT_DISABLED))
    supervisor = worker(tmp_path)
    with capture_logs() as logs:
        await asyncio.wait_for(supervisor.supervise(None), 10)
    assert supervisor.started == 1
    assert not [e for e in logs if e["event"] == "rest-worker-exited"]


async def test_no_worker_at_all_is_logged_and_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[float] = []

    async def no_process(*_: Any, **__: Any) -> None:
        attempts.append(asyncio.get_running_loop().time())
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_process)
    monkeypatch.setattr(serving, "RESTART_FIRST", 0.01)
    supervisor = worker(tmp_path)
    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.supervise(None))
        async with asyncio.timeout(10):
            while len(attempts) < 2:
                assert not task.done(), task
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    failed = [e for e in logs if e["event"] == "rest-worker-failed"]
    assert failed and "Too many open files" in failed[0]["message"]
    assert failed[0]["code"] == "rest-failed"
