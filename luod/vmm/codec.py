"""The VMM socket protocol as pure functions: bytes + fds in, frozen messages out, and back.

No I/O here. ``FrameReader`` splits the byte stream into newline-terminated frames and gives
each frame the fds that arrived with its bytes; the request types are declared here
(``luod.vmm.parse`` decodes a frame into one, ``luod.vmm.fields`` checks their fields);
``encode`` turns a reply or event into one frame.
The wire format is specified in api/vmm-protocol.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from luod.core.model import FileSpec
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import fields as check

if TYPE_CHECKING:
    from luod.core.nic import NicDecl

PROTOCOL: Final = "luod-vmm"
VERSION: Final = 1
MAX_LINE: Final = 64 * 1024
MAX_FDS: Final = 64
MAX_ERROR_TEXT: Final = 1024
"""An error's message and hint are cut to this many characters each, the last line of defence
for an error reply that must always fit in one frame."""


@dataclass(frozen=True)
class Frame:
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


# --- requests ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    seq: int | None

    @property
    def cmd(self) -> str:
        return COMMAND_OF[type(self)]

    @property
    def fds(self) -> tuple[OwnedFd, ...]:
        return ()


@dataclass(frozen=True)
class Hello(Request):
    version: int
    capabilities: tuple[str, ...] = ()  # what the client asks for; luod grants those it knows


@dataclass(frozen=True)
class Register(Request):
    id: str
    nics: tuple[NicDecl, ...] | None = None  # None: the declaration stays as it was


@dataclass(frozen=True)
class Nics(Request):
    """Declare (replace) the network devices of a VM: luod records them at prepare and
    rebuilds them after the kexec (issue 15); an empty list withdraws the declaration."""

    id: str
    nics: tuple[NicDecl, ...]


@dataclass(frozen=True)
class Preserve(Request):
    id: str
    files: tuple[FileSpec, ...]
    attached: tuple[OwnedFd, ...] = field(repr=False, default=())

    @property
    def fds(self) -> tuple[OwnedFd, ...]:
        return self.attached


@dataclass(frozen=True)
class ListVms(Request):
    id: str | None
    limit: int | None = None  # at most this many VMs (and never more than a frame holds)
    after: str | None = None  # the VMs whose id sorts after this one (the last page's next)


@dataclass(frozen=True)
class Drop(Request):
    id: str


@dataclass(frozen=True)
class Reclaim(Request):
    id: str
    names: tuple[str, ...] | None


@dataclass(frozen=True)
class Done(Request):
    id: str
    force: bool = False


@dataclass(frozen=True)
class Subscribe(Request):
    id: str


@dataclass(frozen=True)
class Ready(Request):
    id: str | None
    error: str | None


@dataclass(frozen=True)
class Claim(Request):
    id: str


@dataclass(frozen=True)
class Status(Request):
    pass


@dataclass(frozen=True)
class Kexec(Request):
    kernel: str
    initrd: str | None
    cmdline: str | None


@dataclass(frozen=True)
class Update(Request):
    kernel: str
    initrd: str | None
    cmdline: str | None
    deadlines: tuple[tuple[str, float], ...] = ()
    dry_run: bool = False
    wait: bool = False
    allow_unknown_abi: bool = False


@dataclass(frozen=True)
class Abort(Request):
    reason: str | None


@dataclass(frozen=True)
class Watch(Request):
    pass


@dataclass(frozen=True)
class History(Request):
    limit: int | None = None
    after: str | None = None  # the records after the one with this id (the last page's next)


COMMAND_OF: Final[dict[type[Request], str]] = {
    Hello: "HELLO",
    Register: "REGISTER",
    Nics: "NICS",
    Preserve: "PRESERVE",
    ListVms: "LIST",
    Drop: "DROP",
    Reclaim: "RECLAIM",
    Done: "DONE",
    Subscribe: "SUBSCRIBE",
    Ready: "READY",
    Claim: "CLAIM",
    Status: "STATUS",
    Kexec: "KEXEC",
    Update: "UPDATE",
    Abort: "ABORT",
    Watch: "WATCH",
    History: "HISTORY",
}


def json_object(line: bytes) -> dict[str, Any]:
    """One frame's JSON object, or ``bad-json``."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise LuodError("bad-json", f"not JSON: {exc}", "one JSON object per line") from exc
    if not isinstance(data, dict):
        raise LuodError("bad-json", "not a JSON object", "one JSON object per line")
    return data


# --- replies and events --------------------------------------------------------------------
@dataclass(frozen=True)
class Outgoing:
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


def ok_reply(cmd: str, seq: int | None, result: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"reply": cmd, "ok": True, **(result or {})}
    if seq is not None:
        message["seq"] = seq
    return message


def error_reply(cmd: str | None, seq: int | None, error: LuodError) -> dict[str, Any]:
    """A failure reply; its texts are cut to MAX_ERROR_TEXT so that it always fits a frame."""
    details = error.to_dict()
    for key in ("message", "hint"):
        if isinstance(details.get(key), str) and len(details[key]) > MAX_ERROR_TEXT:
            details[key] = details[key][: MAX_ERROR_TEXT - 1] + "…"
    name = cmd if cmd is None or len(cmd) <= check.SHOWN_CHARS else cmd[: check.SHOWN_CHARS]
    message: dict[str, Any] = {"reply": name or "?", "ok": False, "error": details}
    if seq is not None:
        message["seq"] = seq
    return message


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": name, **fields}


def decode_server_message(frame: Frame) -> dict[str, Any]:
    """Client side: a reply or an event, as a dict; the frame's fds travel separately."""
    data = json_object(frame.line)
    if "reply" not in data and "event" not in data:
        raise LuodError("bad-json", "neither a reply nor an event", "")
    return data
