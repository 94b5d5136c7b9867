"""Framing of the VMM socket, both sides: newline-terminated JSON frames with their fds, the
limits, one reply or event encoded, one server message decoded. Pure functions, no I/O.

The request types (``luod.vmm.codec``) are luod's side only: a VMM's client needs this module
and not them (seventeen request kinds, with luod's model that they name: several ms of every
VMM's start after a kexec). The codec names everything here too. The wire format is
specified in api/vmm-protocol.md.

The values here and in the client's modules (``luod.vmm.protocol``, ``verbs``) are NamedTuples,
not dataclasses: a VMM's start then imports no ``dataclasses`` (with inspect and ast, about 7 ms
on a host) nor makes their methods (bench/NOTES.md, Start-up).
"""

from __future__ import annotations

import json
from typing import Any, Final, NamedTuple

from luod.errors import LuodError
from luod.kernel import OwnedFd

PROTOCOL: Final = "luod-vmm"
VERSION: Final = 1
MAX_LINE: Final = 64 * 1024
MAX_FDS: Final = 64
MAX_ERROR_TEXT: Final = 1024
"""An error's message and hint are cut to this many characters each, the last line of defence
for an error reply that must always fit in one frame."""


class Frame(NamedTuple):
    line: bytes
    fds: tuple[OwnedFd, ...] = ()


class FrameReader:
    """Reassembles frames from stream chunks; fds belong to the frame of the chunk's last byte.

    A unix stream socket may glue bytes of earlier frames (sent without fds) in front of the
    segment that carries fds, but it ends every read that returns fds inside that segment, and
    the segment starts at the first byte of the one sendmsg that carried the frame and its fds.
    So the frame holding a chunk's *last* byte is the one its fds were sent with.
    """

    def __init__(self, max_line: int = MAX_LINE, max_fds: int = MAX_FDS) -> None:
        self._buffer = bytearray()
        self._fds: list[tuple[int, OwnedFd]] = []  # (stream offset in buffer, fd)
        self._max_line = max_line
        self._max_fds = max_fds

    def feed(self, data: bytes, fds: list[OwnedFd]) -> list[Frame]:
        """Consume a chunk; the caller must close everything on LuodError (see ``close``)."""
        position = len(self._buffer) + max(len(data) - 1, 0)
        self._fds.extend((position, fd) for fd in fds)
        self._buffer += data
        frames: list[Frame] = []
        try:
            while (end := self._buffer.find(b"\n")) >= 0:
                frames.append(self._take(end))
            if len(self._buffer) > self._max_line:
                raise LuodError(
                    "line-too-long",
                    f"message exceeds {self._max_line} bytes",
                    "split the request; the connection is closed",
                )
            if len(self._fds) > self._max_fds:  # all for one frame that is not complete yet
                raise LuodError(
                    "too-many-fds",
                    f"more than {self._max_fds} fds sent before the end of a message",
                    f"attach at most {self._max_fds} fds per message; the connection is closed",
                )
        except LuodError:
            for frame in frames:  # not returned, so nobody else would close them
                for fd in frame.fds:
                    fd.close()
            raise
        return frames

    def _take(self, end: int) -> Frame:
        if end > self._max_line:
            raise LuodError(
                "line-too-long",
                f"message exceeds {self._max_line} bytes",
                "split the request; the connection is closed",
            )
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        mine = [fd for offset, fd in self._fds if offset <= end]
        self._fds = [(offset - end - 1, fd) for offset, fd in self._fds if offset > end]
        return Frame(line, tuple(mine))

    @property
    def pending_fds(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        """Close every fd still waiting for its frame."""
        for _, fd in self._fds:
            fd.close()
        self._fds.clear()
        self._buffer.clear()


def json_object(line: bytes) -> dict[str, Any]:
    """One frame's JSON object, or ``bad-json``."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise LuodError("bad-json", f"not JSON: {exc}", "one JSON object per line") from exc
    if not isinstance(data, dict):
        raise LuodError("bad-json", "not a JSON object", "one JSON object per line")
    return data


class Outgoing(NamedTuple):
    """One frame to send, with the fds to attach (sent, then closed by the sender)."""

    line: bytes
    fds: tuple[OwnedFd, ...] = ()


ASK_FOR_LESS: Final = "ask for less at a time: LIST and HISTORY take 'limit' and a cursor"


class ReplyTooLarge(LuodError):
    """``reply-too-large``: an answer that does not fit in one frame (the caller pages)."""

    def __init__(self, size: int, hint: str = ASK_FOR_LESS) -> None:
        super().__init__(
            "reply-too-large",
            f"the reply would be {size} bytes, a frame holds at most {MAX_LINE}",
            hint,
        )


def encode(message: dict[str, Any], fds: tuple[OwnedFd, ...] = ()) -> Outgoing:
    """One frame; ReplyTooLarge (a LuodError) when it would exceed MAX_LINE."""
    line = json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise ReplyTooLarge(len(line))
    return Outgoing(line, fds)


def decode_server_message(frame: Frame) -> dict[str, Any]:
    """Client side: a reply or an event, as a dict; the frame's fds travel separately."""
    data = json_object(frame.line)
    if "reply" not in data and "event" not in data:
        raise LuodError("bad-json", "neither a reply nor an event", "")
    return data
