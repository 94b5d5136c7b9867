"""Moving frames and fds over the VMM socket with asyncio: the I/O of ``AsyncClient``
(``luod.vmm.async_client``). Receiving is ``luod.vmm.transport.receive`` on a non-blocking
socket; this adds what must not block the loop: connecting, sending, waiting for readiness.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Final

from luod.fdpass import pack_rights
from luod.vmm.protocol import ClientProtocol, ConnectionBroken, OutFrame
from luod.vmm.transport import CONNECT_POLL

CONNECT_TIMEOUT: Final = 30.0
"""How long ``connect_async`` waits for room in luod's listen backlog."""


async def connect_async(
    path: str | os.PathLike[str], timeout: float = CONNECT_TIMEOUT, wait: float = 0.0
) -> socket.socket:
    """Connected without blocking the loop. While luod's listen backlog is full (many VMMs
    connecting at once, after a kexec), a non-blocking connect(2) on a unix socket fails with
    EAGAIN, and no connection is in progress: asyncio's ``sock_connect`` would then hand back
    an unconnected socket (ENOTCONN at the first send). The connect is retried instead, as a
    blocking connect would wait, for at most ``timeout`` seconds. ``wait``: as
    ``luod.vmm.transport.connect``, for a luod that is starting."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await _retrying_connect(sock, os.fspath(path), timeout, wait)
    except BaseException:
        sock.close()
        raise
    return sock


async def _retrying_connect(sock: socket.socket, path: str, timeout: float, wait: float) -> None:
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + timeout, 0.001
    absent_until = loop.time() + wait
    while True:
        try:
            sock.connect(path)
            return
        except (FileNotFoundError, ConnectionRefusedError):  # no luod yet: wait for it
            if loop.time() >= absent_until:
                raise
            await asyncio.sleep(CONNECT_POLL)
            continue
        except BlockingIOError as exc:  # EAGAIN: the backlog is full, nothing in progress
            if loop.time() >= deadline:
                raise ConnectionError(
                    errno.EAGAIN,
                    f"luod's socket {path} accepted no connection within {timeout:g} s "
                    "(its listen backlog stayed full): is luod stuck?",
                ) from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


async def send_async(sock: socket.socket, frame: OutFrame, protocol: ClientProtocol) -> None:
    view, rights = memoryview(frame.line), pack_rights(frame.fds)
    try:
        while view:
            try:
                sent = sock.sendmsg([view], rights)
            except (BlockingIOError, InterruptedError):
                await io_ready(sock, writing=True)
                continue
            view, rights = view[sent:], []
    except OSError as exc:
        protocol.fail(ConnectionBroken(f"sending to luod: {exc}"), exc)
    except BaseException:  # cancelled half-way: the stream is cut mid-frame
        if len(view) < len(frame.line):
            protocol.mark_broken(ConnectionBroken("a request was cut off half-way (cancelled)"))
        raise


async def io_ready(sock: socket.socket, *, writing: bool) -> None:
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    if writing:
        loop.add_writer(sock.fileno(), _wake, woken)
    else:
        loop.add_reader(sock.fileno(), _wake, woken)
    try:
        await woken
    finally:
        (loop.remove_writer if writing else loop.remove_reader)(sock.fileno())


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
