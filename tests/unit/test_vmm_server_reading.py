"""How the VMM server reads a connection: one frame at a time (issue 13, finding 4), and, for a
client that waits for each reply (every VMM), without an epoll_ctl(2) pair per request: the
reader is removed only when the client sends while a frame of its is being answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from luod.vmm import codec
from luod.vmm.server import Connection, VmmServer


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts its remove_reader calls on the server's side of the
    connection (the test's client, in the same loop, has its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.removed = 0
        self.client_fd = -1

    def remove_reader(self, fd: Any) -> bool:
        if fd != self.client_fd:
            self.removed += 1
        return super().remove_reader(fd)


class Gate:
    """A handler that answers each request in order, the gated ones only once released."""

    def __init__(self, gated: set[int]) -> None:
        self.gated = gated
        self.release = asyncio.Event()
        self.seen: list[int | None] = []

    async def handle(self, conn: Connection, request: codec.Request) -> codec.Outgoing:
        self.seen.append(request.seq)
        if request.seq in self.gated:
            await self.release.wait()
        return codec.encode(codec.ok_reply(request.cmd, request.seq))

    def disconnected(self, conn: Connection) -> None:
        pass


def frame(seq: int) -> bytes:
    return json.dumps({"cmd": "LIST", "seq": seq}).encode() + b"\n"


async def reply(reader: asyncio.StreamReader) -> int:
    return int(json.loads(await reader.readline())["seq"])


@contextlib.asynccontextmanager
async def client_of(
    path: Path, handler: Gate, loop: CountingLoop
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A VmmServer serving ``handler`` at ``path``, and a client connected to it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    server = loop.create_task(VmmServer(listener, handler).serve())
    reader, writer = await asyncio.open_unix_connection(str(path))
    loop.client_fd = writer.get_extra_info("socket").fileno()
    try:
        yield reader, writer
    finally:
        writer.close()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        listener.close()


def removed_readers(body: Callable[[CountingLoop], Awaitable[None]]) -> int:
    """How often the server removed a reader while ``body`` ran."""
    loop = CountingLoop()
    try:
        loop.run_until_complete(body(loop))
    finally:
        loop.close()
    return loop.removed


def test_a_client_that_waits_for_each_reply_keeps_its_reader(tmp_path: Path) -> None:
    async def body(loop: CountingLoop) -> None:
        async with client_of(tmp_path / "s", Gate(set()), loop) as (reader, writer):
            for seq in range(100):
                writer.write(frame(seq))
                assert await reply(reader) == seq
            assert loop.removed == 0  # was one per request (and an add_reader)

    removed_readers(body)


def test_a_frame_sent_while_one_is_answered_waits_in_the_socket(tmp_path: Path) -> None:
    gate = Gate({1})

    async def body(loop: CountingLoop) -> None:
        async with client_of(tmp_path / "s", gate, loop) as (reader, writer):
            writer.write(frame(1))
            await writer.drain()
            while gate.seen != [1]:
                await asyncio.sleep(0.01)
            writer.write(frame(2))  # the first is still being answered
            await writer.drain()
            await asyncio.sleep(0.2)
            # luod stopped watching the socket, so frame 2 (and any fds) stays in it
            assert (gate.seen, loop.removed) == ([1], 1)
            gate.release.set()
            assert [await reply(reader), await reply(reader)] == [1, 2]
            assert gate.seen == [1, 2]

    removed_readers(body)
