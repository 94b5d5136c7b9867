"""Integration tier: real sockets and subprocesses (a luod on the simulator)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    state: Path
    socket: Path
    log: Path

    def fds(self) -> set[str]:
        return set(os.listdir(f"/proc/{self.process.pid}/fd"))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)


def start_daemon(
    state: Path,
    *extra: str,
    socket_path: Path | None = None,
    api: bool = False,
    env: dict[str, str] | None = None,
) -> Daemon:
    """luod on the simulator; without its REST API unless asked (whose lazy start would make
    the fd-table comparisons of these tests racy; tests/rest covers it)."""
    state.mkdir(parents=True, exist_ok=True)
    log = state / "luod.log"
    if socket_path is not None:
        extra = (*extra, "--socket", str(socket_path))
    if not api:
        extra = (*extra, "--no-api")
    socket_path = socket_path or state / "run" / "liveupdate.sock"
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    process = subprocess.Popen(
        [sys.executable, "-m", "luod", "--simulate", str(state), *extra],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"luod did not start:\n{log.read_text()}")
        time.sleep(0.02)
    return Daemon(process, state, socket_path, log)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = start_daemon(tmp_path / "luod")
    yield running
    running.stop()
