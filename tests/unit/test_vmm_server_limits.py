"""The VMM server's per-connection output bound at the limit and one byte past it
(docs/limits.md): a client that does not read is disconnected, never waited for."""

from __future__ import annotations

import asyncio
import socket

from luod.core.access import Peer
from luod.vmm import codec
from luod.vmm.server import MAX_QUEUED_BYTES, Connection


class Stalled:
    """A socket whose peer never reads: every send would block."""

    def __init__(self) -> None:
        self.real, self.peer = socket.socketpair()

    def sendmsg(self, *_: object) -> int:
        raise BlockingIOError

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()
        self.peer.close()


def queued(total: int) -> bool:
    """Whether a connection is still open after ``total`` bytes were queued for it."""
    loop = asyncio.new_event_loop()
    stalled = Stalled()
    conn = Connection(stalled, Peer(0, 0, 1), loop)  # type: ignore[arg-type]
    chunk = 60_000
    while total > 0:
        conn.push(codec.Outgoing(b"x" * min(chunk, total)))
        total -= chunk
    still_open = not conn.closed
    conn.close()
    loop.close()
    return still_open


def test_exactly_max_queued_bytes_keeps_the_connection() -> None:
    assert queued(MAX_QUEUED_BYTES)


def test_one_byte_more_disconnects_the_client() -> None:
    assert not queued(MAX_QUEUED_BYTES + 1)
