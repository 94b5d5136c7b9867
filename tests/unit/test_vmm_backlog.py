"""Many VMMs connecting at once (after a kexec every VMM unit starts together): luod's listen
backlog holds them, and the asyncio client waits for room instead of keeping a socket that
never connected.

Found with bench/blackout_budget.py at 300 VMs: luod listened with a backlog of 128, and a
non-blocking connect(2) on a unix socket whose backlog is full fails with EAGAIN (no connection
in progress); asyncio's ``sock_connect`` took that for success, so the VMM's first request
failed with ENOTCONN.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.daemon.daemon import bind
from luod.vmm import async_transport

pytestmark = pytest.mark.unit
VMMS = 300


@contextlib.contextmanager
def listener(path: Path, backlog: int) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(backlog)
    try:
        yield sock
    finally:
        sock.close()


def accept_later(sock: socket.socket, count: int, after: float) -> list[bytes]:
    """Accept ``count`` connections after ``after`` seconds, reading one byte from each."""
    got: list[bytes] = []

    def run() -> None:
        time.sleep(after)
        for _ in range(count):
            conn, _ = sock.accept()
            with conn:
                got.append(conn.recv(1))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return got


def test_luod_listens_with_room_for_every_vmm_at_once(tmp_path: Path) -> None:
    """300 VMMs connect before luod accepts one: none is refused (the old backlog held 129)."""
    listening = bind(tmp_path / "liveupdate.sock", group="no-such-group-here")
    clients: list[socket.socket] = []
    try:
        for _ in range(VMMS):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(client)
            client.setblocking(False)
            client.connect(str(tmp_path / "liveupdate.sock"))  # EAGAIN would raise here
        assert len(clients) == VMMS
    finally:
        for client in clients:
            client.close()
        listening.close()


def test_async_connect_waits_for_room_in_the_backlog(tmp_path: Path) -> None:
    path = tmp_path / "s"
    count = 8
    with listener(path, backlog=1) as sock:
        got = accept_later(sock, count, after=0.3)

        async def one(i: int) -> None:
            conn = await async_transport.connect_async(path, timeout=10)
            with conn:
                await asyncio.get_running_loop().sock_sendall(conn, bytes([i]))

        async def every() -> None:
            await asyncio.gather(*(one(i) for i in range(count)))

        asyncio.run(every())
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            time.sleep(0.01)
    assert sorted(got) == [bytes([i]) for i in range(count)]


def test_async_connect_to_a_luod_that_never_accepts_says_so(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with listener(path, backlog=1) as sock:
        fillers = []
        for _ in range(4):  # fill the backlog (Linux admits backlog + 1)
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(str(path))
            fillers.append(filler)
        started = time.monotonic()
        with pytest.raises(ConnectionError) as caught:
            asyncio.run(async_transport.connect_async(path, timeout=0.3))
        waited = time.monotonic() - started
        for filler in fillers:
            filler.close()
        assert sock.fileno() >= 0
    assert caught.value.errno == errno.EAGAIN
    assert "listen backlog" in str(caught.value) and str(path) in str(caught.value)
    assert 0.3 <= waited < 5
