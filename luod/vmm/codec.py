"""The VMM socket protocol as pure functions: bytes + fds in, frozen messages out, and back.

No I/O here. The request types, luod's side only, are declared here (``luod.vmm.parse``
decodes a frame into one, ``luod.vmm.fields`` checks their fields), with the replies' and
events' shapes. The framing both sides share (``FrameReader``: the byte stream into
newline-terminated frames, each with the fds that arrived with its bytes; ``encode``: a reply
or event into one frame) is ``luod.vmm.framing``, named here too.
The wire format is specified in api/vmm-protocol.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple

from luod.core.model import FileSpec
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.values import Value
from luod.vmm import fields as check
from luod.vmm.framing import ASK_FOR_LESS as ASK_FOR_LESS
from luod.vmm.framing import MAX_ERROR_TEXT as MAX_ERROR_TEXT
from luod.vmm.framing import MAX_FDS as MAX_FDS
from luod.vmm.framing import MAX_LINE as MAX_LINE
from luod.vmm.framing import PROTOCOL as PROTOCOL
from luod.vmm.framing import VERSION as VERSION
from luod.vmm.framing import Frame as Frame
from luod.vmm.framing import FrameReader as FrameReader
from luod.vmm.framing import Outgoing as Outgoing
from luod.vmm.framing import ReplyTooLarge as ReplyTooLarge
from luod.vmm.framing import decode_server_message as decode_server_message
from luod.vmm.framing import encode as encode
from luod.vmm.framing import json_object as json_object

if TYPE_CHECKING:
    from luod.core.nic import NicDecl


# --- requests ------------------------------------------------------------------------------
# Each request is a NamedTuple of its fields (``_Hello``) with ``Request`` first among the
# public class's bases (``Hello``): immutable, compared within its own kind only, and made at
# import without dataclasses' per-method compiling (luod.values: the codec's eighteen frozen
# dataclasses were 9 ms of luod's start on a host, before its first RECLAIM).
class Request(Value):
    __slots__ = ()
    seq: int | None  # every request's first field, declared by each NamedTuple

    @property
    def cmd(self) -> str:
        return COMMAND_OF[type(self)]

    @property
    def fds(self) -> tuple[OwnedFd, ...]:
        return ()


class _Hello(NamedTuple):
    seq: int | None
    version: int
    capabilities: tuple[str, ...] = ()  # what the client asks for; luod grants those it knows


class Hello(Request, _Hello):
    __slots__ = ()


class _Register(NamedTuple):
    seq: int | None
    id: str
    nics: tuple[NicDecl, ...] | None = None  # None: the declaration stays as it was


class Register(Request, _Register):
    __slots__ = ()


class _Nics(NamedTuple):
    seq: int | None
    id: str
    nics: tuple[NicDecl, ...]


class Nics(Request, _Nics):
    """Declare (replace) the network devices of a VM: luod records them at prepare and
    rebuilds them after the kexec (issue 15); an empty list withdraws the declaration."""

    __slots__ = ()


class _Preserve(NamedTuple):
    seq: int | None
    id: str
    files: tuple[FileSpec, ...]
    attached: tuple[OwnedFd, ...] = ()


class Preserve(Request, _Preserve):
    __slots__ = ()

    @property
    def fds(self) -> tuple[OwnedFd, ...]:
        return self.attached

    def __repr__(self) -> str:  # the fds stay out of it, as they stay out of log lines
        return f"Preserve(seq={self.seq!r}, id={self.id!r}, files={self.files!r})"


class _ListVms(NamedTuple):
    seq: int | None
    id: str | None
    limit: int | None = None  # at most this many VMs (and never more than a frame holds)
    after: str | None = None  # the VMs whose id sorts after this one (the last page's next)


class ListVms(Request, _ListVms):
    __slots__ = ()


class _Drop(NamedTuple):
    seq: int | None
    id: str


class Drop(Request, _Drop):
    __slots__ = ()


class _Reclaim(NamedTuple):
    seq: int | None
    id: str
    names: tuple[str, ...] | None


class Reclaim(Request, _Reclaim):
    __slots__ = ()


class _Done(NamedTuple):
    seq: int | None
    id: str
    force: bool = False


class Done(Request, _Done):
    __slots__ = ()


class _Subscribe(NamedTuple):
    seq: int | None
    id: str


class Subscribe(Request, _Subscribe):
    __slots__ = ()


class _Ready(NamedTuple):
    seq: int | None
    id: str | None
    error: str | None


class Ready(Request, _Ready):
    __slots__ = ()


class _Claim(NamedTuple):
    seq: int | None
    id: str


class Claim(Request, _Claim):
    __slots__ = ()


class _Status(NamedTuple):
    seq: int | None


class Status(Request, _Status):
    __slots__ = ()


class _Kexec(NamedTuple):
    seq: int | None
    kernel: str
    initrd: str | None
    cmdline: str | None


class Kexec(Request, _Kexec):
    __slots__ = ()


class _Update(NamedTuple):
    seq: int | None
    kernel: str
    initrd: str | None
    cmdline: str | None
    deadlines: tuple[tuple[str, float], ...] = ()
    dry_run: bool = False
    wait: bool = False
    allow_unknown_abi: bool = False


class Update(Request, _Update):
    __slots__ = ()


class _Abort(NamedTuple):
    seq: int | None
    reason: str | None


class Abort(Request, _Abort):
    __slots__ = ()


class _Watch(NamedTuple):
    seq: int | None


class Watch(Request, _Watch):
    __slots__ = ()


class _History(NamedTuple):
    seq: int | None
    limit: int | None = None
    after: str | None = None  # the records after the one with this id (the last page's next)


class History(Request, _History):
    __slots__ = ()


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


# --- replies and events --------------------------------------------------------------------
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
