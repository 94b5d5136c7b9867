"""The ``luod`` command starts with the garbage collector off (luod.start) and the daemon turns
it on again once it serves, after freezing the start-up heap (issue 17: 8-10 ms of collections
before the first RECLAIM, on objects that live as long as luod)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

import luod.main
from luod import start


def test_the_command_runs_luod_with_the_collector_off(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def main() -> int:
        seen.append(gc.isenabled())
        return 3

    monkeypatch.setattr(luod.main, "main", main)
    try:
        with pytest.raises(SystemExit) as exited:
            start.entry()
    finally:
        gc.enable()
    assert seen == [False] and exited.value.code == 3  # luod's exit status is the command's


def test_the_daemon_turns_the_collector_on_once_it_serves(tmp_path: Path) -> None:
    script = f"""
import asyncio, gc
from pathlib import Path
from luod.core.access import AccessPolicy
from luod.daemon.daemon import Daemon
from luod.daemon.settings import Settings

async def main():
    gc.disable()
    daemon = Daemon(Settings.simulated(Path({str(tmp_path)!r}), access=AccessPolicy.default()))
    task = asyncio.create_task(daemon.run())
    while not daemon.settings.socket_path.exists():
        assert not task.done(), task
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    print(gc.isenabled(), gc.get_freeze_count() > 0, flush=True)
    daemon.stop()
    await task

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert "True True" in done.stdout.splitlines(), done.stdout + done.stderr
