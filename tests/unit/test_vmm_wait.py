"""A VMM started with luod waits for luod's socket (``Client(wait=)``, ``AsyncClient(wait=)``):
a socket that is not there yet, or one a dead luod left with nobody listening, is tried again
until ``wait`` runs out; without ``wait`` the error is at once, as before."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

from luod.vmm.async_client import AsyncClient
from luod.vmm.client import Client


def listen_later(path: Path, delay: float) -> threading.Thread:
    """A listener bound at ``path`` after ``delay`` s (a dead luod's socket file replaced);
    it accepts one connection and keeps it until the test ends."""
    accepted: list[socket.socket] = []

    def serve() -> None:
        time.sleep(delay)
        path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(path))
            listener.listen(1)
            listener.settimeout(10)
            accepted.append(listener.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.accepted = accepted  # type: ignore[attr-defined]
    thread.start()
    return thread


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on: connect(2) gives ECONNREFUSED."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))


@pytest.mark.parametrize("stale", [False, True], ids=["absent", "stale"])
def test_the_blocking_client_waits_for_luods_socket(tmp_path: Path, stale: bool) -> None:
    path = tmp_path / "liveupdate.sock"
    if stale:
        stale_socket(path)
    server = listen_later(path, 0.3)
    started = time.monotonic()
    with Client(path, wait=10, capabilities=None):
        waited = time.monotonic() - started
    server.join(5)
    assert len(server.accepted) == 1  # type: ignore[attr-defined]
    assert 0.25 < waited < 5, waited


@pytest.mark.parametrize("stale", [False, True], ids=["absent", "stale"])
def test_without_wait_or_after_it_the_error_is_raised(tmp_path: Path, stale: bool) -> None:
    path = tmp_path / "liveupdate.sock"
    error = ConnectionRefusedError if stale else FileNotFoundError
    if stale:
        stale_socket(path)
    with pytest.raises(error):
        Client(path)
    started = time.monotonic()
    with pytest.raises(error):
        Client(path, wait=0.3)
    assert time.monotonic() - started >= 0.3


def test_the_async_client_waits_for_luods_socket(tmp_path: Path) -> None:
    path = tmp_path / "liveupdate.sock"
    server = listen_later(path, 0.3)

    async def connect() -> None:
        client = await AsyncClient(path, wait=10, capabilities=None).connect()
        client.close()

    asyncio.run(connect())
    server.join(5)
    assert len(server.accepted) == 1  # type: ignore[attr-defined]

    async def absent() -> None:
        await AsyncClient(tmp_path / "nobody.sock", wait=0.2).connect()

    with pytest.raises(FileNotFoundError):
        asyncio.run(absent())
