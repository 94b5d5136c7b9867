"""The VMM socket protocol as pure functions: bytes + fds in, frozen messages out, and back.

No I/O here. The request types, luod's side only, are declared here (``luod.vmm.parse``
decodes a frame into one, ``luod.vmm.fields`` checks their fields), with the replies' and
events' shapes. The framing both sides share (``FrameReader``: the byte stream into
newline-terminated frames, each with the fds that arrived with its bytes; ``encode``: a reply
or event into one frame) is ``luod.vmm.framing``, named here too.
The wire format is specified in api/vmm-protocol.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from luod.core.model import FileSpec
from luod.errors import LuodError
from luod.kernel import OwnedFd
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
