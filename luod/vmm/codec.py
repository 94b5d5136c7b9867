"""The VMM socket protocol as pure functions: bytes + fds in, frozen messages out, and back.

No I/O here. ``FrameReader`` splits the byte stream into newline-terminated frames and gives
each frame the fds that arrived with its bytes; ``decode_request`` turns one frame into a
request object or raises ``LuodError``; ``encode`` turns a reply or event into one frame.
The wire format is specified in api/vmm-protocol.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from luod.core.model import FILE_KINDS as KINDS
from luod.core.model import FILE_NAME, VM_ID, FileSpec
from luod.core.nic import NicDecl
from luod.core.orchestrator import DEADLINE_PHASES, MAX_DEADLINE
from luod.errors import LuodError
from luod.kernel import OwnedFd

PROTOCOL: Final = "luod-vmm"
VERSION: Final = 1
MAX_LINE: Final = 64 * 1024
MAX_FDS: Final = 64
SHOWN_CHARS: Final = 64
"""An echoed value (a bad id, name, command) is cut to this many characters: the reply that
names it must stay far below MAX_LINE, whatever the client sent (issue 13, finding 1)."""
MAX_ERROR_TEXT: Final = 1024
"""An error's message and hint are cut to this many characters each, the last line of defence
for an error reply that must always fit in one frame."""
MAX_NICS: Final = 32


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


def decode_request(frame: Frame) -> Request:
    """Parse and validate one request frame. Raises LuodError; never closes ``frame.fds``."""
    data = _json_object(frame.line)
    seq = _seq(data)
    try:
        cmd = data.get("cmd")
        if not isinstance(cmd, str):
            raise _bad("cmd", "a string naming the command", "missing or not a string")
        parser = _PARSERS.get(cmd.upper())
        if parser is None:
            raise LuodError(
                "unknown-command",
                f"unknown command {shown(cmd)}",
                f"known commands: {', '.join(sorted(_PARSERS))}",
            )
        if len(frame.fds) > MAX_FDS:
            raise LuodError(
                "too-many-fds",
                f"{len(frame.fds)} fds attached, at most {MAX_FDS}",
                "send the files in several PRESERVE requests",
            )
        request = parser(data, seq, frame.fds)
        if frame.fds and not request.fds:
            raise LuodError(
                "unexpected-fds",
                f"{cmd} takes no fds but {len(frame.fds)} came",
                "attach fds only to PRESERVE",
            )
        return request
    except LuodError as exc:
        exc.seq = seq
        cmd = data.get("cmd")
        exc.cmd = cmd.upper() if isinstance(cmd, str) else None  # as in ok replies
        raise


def _json_object(line: bytes) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise LuodError("bad-json", f"not JSON: {exc}", "one JSON object per line") from exc
    if not isinstance(data, dict):
        raise LuodError("bad-json", "not a JSON object", "one JSON object per line")
    return data


def _seq(data: dict[str, Any]) -> int | None:
    seq = data.get("seq")
    if seq is None or (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0):
        return seq
    return None


def shown(value: Any) -> str:
    """``repr(value)``, cut to SHOWN_CHARS characters: what an error may echo of the input."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _bad(key: str, wanted: str, got: str) -> LuodError:
    return LuodError("bad-request", f"field {key!r}: {got}", f"{key} must be {wanted}")


def _vm_id(data: dict[str, Any], key: str = "id", optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not VM_ID.fullmatch(value):
        raise LuodError(
            "bad-id",
            f"invalid VM id {shown(value)}",
            "VM ids match [A-Za-z0-9][A-Za-z0-9._-]{0,57}",
        )
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not FILE_NAME.fullmatch(value):
        raise LuodError(
            "bad-name",
            f"invalid file name {shown(value)}",
            "file names match [A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        )
    return value


def _optional_str(data: dict[str, Any], key: str, limit: int = 4096) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or "\0" in value:
        raise _bad(key, f"a string of at most {limit} characters without NUL", shown(value))
    return value


def _file_spec(item: Any) -> FileSpec:
    if isinstance(item, str):
        return FileSpec(_name(item))
    if not isinstance(item, dict):
        raise _bad("files[]", "a name or {name, kind}", type(item).__name__)
    kind = item.get("kind", "memfd")
    if kind not in KINDS:
        raise _bad("files[].kind", f"one of {', '.join(KINDS)}", shown(kind))
    return FileSpec(_name(item.get("name")), kind)


def _preserve(data: dict[str, Any], seq: int | None, fds: tuple[OwnedFd, ...]) -> Preserve:
    vm = _vm_id(data)
    files = data.get("files")
    if not isinstance(files, list) or not files or len(files) > MAX_FDS:
        raise _bad("files", f"a list of 1..{MAX_FDS} files", shown(files))
    specs = tuple(_file_spec(item) for item in files)
    if len({s.name for s in specs}) != len(specs):
        raise _bad("files", "distinct names", "a name appears twice")
    if len(fds) != len(specs):
        raise LuodError(
            "fd-count-mismatch",
            f"{len(specs)} files named, {len(fds)} fds attached",
            "attach exactly one fd per entry of files, in the same order",
        )
    return Preserve(seq, vm, specs, fds)


def _nics(data: dict[str, Any], optional: bool) -> tuple[NicDecl, ...] | None:
    items = data.get("nics")
    if items is None and optional:
        return None
    if not isinstance(items, list) or len(items) > MAX_NICS:
        raise _bad("nics", f"a list of at most {MAX_NICS} {{name, bridge}}", repr(items)[:80])
    decls = tuple(NicDecl.from_dict(item, f"nics[{i}]") for i, item in enumerate(items))
    if len({decl.name for decl in decls}) != len(decls):
        raise _bad("nics", "distinct device names", "a device appears twice")
    return decls


def _register(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> Register:
    return Register(seq, _vm_id(data), _nics(data, optional=True))


def _declare(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> Nics:
    return Nics(seq, _vm_id(data), _nics(data, optional=False) or ())


def _reclaim(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> Reclaim:
    names = data.get("files")
    if names is not None:
        if not isinstance(names, list) or len(names) > MAX_FDS:
            raise _bad("files", f"a list of at most {MAX_FDS} names", shown(names))
        names = tuple(_name(n) for n in names)
    return Reclaim(seq, _vm_id(data), names)


def _kexec(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> Kexec:
    kernel = _optional_str(data, "kernel")
    if not kernel:
        raise _bad("kernel", "the path of the next kernel image", "missing")
    return Kexec(seq, kernel, _optional_str(data, "initrd"), _optional_str(data, "cmdline"))


def _update(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> Update:
    kexec = _kexec(data, seq, ())
    deadlines = data.get("deadlines") or {}
    if not isinstance(deadlines, dict) or any(
        k not in DEADLINE_PHASES
        or not isinstance(v, int | float)
        or isinstance(v, bool)
        or not 0 < v <= MAX_DEADLINE  # also refuses NaN and Infinity
        for k, v in deadlines.items()
    ):
        raise _bad(
            "deadlines",
            f"seconds > 0 per phase of {', '.join(DEADLINE_PHASES)}",
            shown(deadlines),
        )
    return Update(
        seq,
        kexec.kernel,
        kexec.initrd,
        kexec.cmdline,
        tuple((k, float(v)) for k, v in deadlines.items()),
        data.get("dry_run") is True,
        data.get("wait") is True,
        data.get("allow_unknown_abi") is True,
    )


CAPABILITY: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MAX_CAPABILITIES: Final = 64


def _hello(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> Hello:
    version = data.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad("version", "an integer", shown(version))
    asked = data.get("capabilities", [])
    if (
        not isinstance(asked, list)
        or len(asked) > MAX_CAPABILITIES
        or not all(isinstance(c, str) and CAPABILITY.fullmatch(c) for c in asked)
    ):
        raise _bad(
            "capabilities",
            f'a list of at most {MAX_CAPABILITIES} names like "freeze"',
            shown(asked),
        )
    return Hello(seq, version, tuple(asked))


MAX_PAGE: Final = 1000
PAGE_BYTES: Final = MAX_LINE - 4096
"""What the items of one LIST or HISTORY page may take in a frame: the rest is the envelope."""


def _page_limit(data: dict[str, Any]) -> int | None:
    value = data.get("limit")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PAGE:
        raise _bad("limit", f"an integer from 1 to {MAX_PAGE}", shown(value))
    return value


def page(
    items: list[dict[str, Any]], limit: int | None, cursor: Callable[[dict[str, Any]], str]
) -> tuple[list[dict[str, Any]], str | None]:
    """The first items that fit one frame (and ``limit``), and the cursor of the next page
    (None on the last): LIST and HISTORY page this way (issue 13, finding 11)."""
    taken: list[dict[str, Any]] = []
    size = 0
    for item in items[: limit or len(items)]:
        size += len(json.dumps(item, separators=(",", ":"))) + 1
        if size > PAGE_BYTES:
            if not taken:
                raise ReplyTooLarge(size)
            break
        taken.append(item)
    more = len(taken) < len(items)
    return taken, cursor(taken[-1]) if more and taken else None


Parser = Callable[[dict[str, Any], int | None, tuple[OwnedFd, ...]], Request]
_PARSERS: Final[dict[str, Parser]] = {
    "HELLO": _hello,
    "REGISTER": _register,
    "NICS": _declare,
    "PRESERVE": _preserve,
    "LIST": lambda d, s, _: ListVms(
        s, _vm_id(d, optional=True), _page_limit(d), _vm_id(d, "after", optional=True)
    ),
    "DROP": lambda d, s, _: Drop(s, _vm_id(d)),
    "RECLAIM": _reclaim,
    "DONE": lambda d, s, _: Done(s, _vm_id(d), d.get("force") is True),
    "SUBSCRIBE": lambda d, s, _: Subscribe(s, _vm_id(d)),
    "READY": lambda d, s, _: Ready(s, _vm_id(d, optional=True), _optional_str(d, "error")),
    "CLAIM": lambda d, s, _: Claim(s, _vm_id(d)),
    "STATUS": lambda d, s, _: Status(s),
    "KEXEC": _kexec,
    "UPDATE": _update,
    "ABORT": lambda d, s, _: Abort(s, _optional_str(d, "reason", 512)),
    "WATCH": lambda d, s, _: Watch(s),
    "HISTORY": lambda d, s, _: History(s, _page_limit(d), _optional_str(d, "after", 64)),
}


# --- replies and events --------------------------------------------------------------------
@dataclass(frozen=True)
class Outgoing:
    """One frame to send, with the fds to attach (sent, then closed by the sender)."""

    line: bytes
    fds: tuple[OwnedFd, ...] = ()


class ReplyTooLarge(LuodError):
    """``reply-too-large``: an answer that does not fit in one frame (the caller pages)."""

    def __init__(self, size: int) -> None:
        super().__init__(
            "reply-too-large",
            f"the reply would be {size} bytes, a frame holds at most {MAX_LINE}",
            "ask for less at a time: LIST and HISTORY take 'limit' and a cursor",
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
    name = cmd if cmd is None or len(cmd) <= SHOWN_CHARS else cmd[:SHOWN_CHARS]
    message: dict[str, Any] = {"reply": name or "?", "ok": False, "error": details}
    if seq is not None:
        message["seq"] = seq
    return message


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": name, **fields}


def decode_server_message(frame: Frame) -> dict[str, Any]:
    """Client side: a reply or an event, as a dict; the frame's fds travel separately."""
    data = _json_object(frame.line)
    if "reply" not in data and "event" not in data:
        raise LuodError("bad-json", "neither a reply nor an event", "")
    return data
