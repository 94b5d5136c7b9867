"""The requests a VMM sends, decoded: one frame in, a frozen ``luod.vmm.codec.Request`` out, or
``LuodError`` with a code and a hint. Pure, no I/O; the wire format is api/vmm-protocol.md."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from luod.core.orchestrator import DEADLINE_PHASES, MAX_DEADLINE
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import codec
from luod.vmm import fields as check

if TYPE_CHECKING:
    from luod.core.nic import NicDecl

MAX_NICS: Final = 32


def decode_request(frame: codec.Frame) -> codec.Request:
    """Parse and validate one request frame. Raises LuodError; never closes ``frame.fds``."""
    data = codec.json_object(frame.line)
    seq = _seq(data)
    try:
        cmd = data.get("cmd")
        if not isinstance(cmd, str):
            raise check.bad("cmd", "a string naming the command", "missing or not a string")
        parser = _PARSERS.get(cmd.upper())
        if parser is None:
            raise LuodError(
                "unknown-command",
                f"unknown command {check.shown(cmd)}",
                f"known commands: {', '.join(sorted(_PARSERS))}",
            )
        if len(frame.fds) > codec.MAX_FDS:
            raise LuodError(
                "too-many-fds",
                f"{len(frame.fds)} fds attached, at most {codec.MAX_FDS}",
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


def _seq(data: dict[str, Any]) -> int | None:
    seq = data.get("seq")
    if seq is None or (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0):
        return seq
    return None


def _preserve(data: dict[str, Any], seq: int | None, fds: tuple[OwnedFd, ...]) -> codec.Preserve:
    vm = check.vm_id(data)
    files = data.get("files")
    if not isinstance(files, list) or not files or len(files) > codec.MAX_FDS:
        raise check.bad("files", f"a list of 1..{codec.MAX_FDS} files", check.shown(files))
    specs = tuple(check.file_spec(item) for item in files)
    if len({s.name for s in specs}) != len(specs):
        raise check.bad("files", "distinct names", "a name appears twice")
    if len(fds) != len(specs):
        raise LuodError(
            "fd-count-mismatch",
            f"{len(specs)} files named, {len(fds)} fds attached",
            "attach exactly one fd per entry of files, in the same order",
        )
    return codec.Preserve(seq, vm, specs, fds)


def _nics(data: dict[str, Any], optional: bool) -> tuple[NicDecl, ...] | None:
    items = data.get("nics")
    if items is None and optional:
        return None
    if not isinstance(items, list) or len(items) > MAX_NICS:
        raise check.bad("nics", f"a list of at most {MAX_NICS} {{name, bridge}}", repr(items)[:80])
    from luod.core.nic import NicDecl  # only a VMM that declares NICs needs it

    decls = tuple(NicDecl.from_dict(item, f"nics[{i}]") for i, item in enumerate(items))
    if len({decl.name for decl in decls}) != len(decls):
        raise check.bad("nics", "distinct device names", "a device appears twice")
    return decls


def _register(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> codec.Register:
    return codec.Register(seq, check.vm_id(data), _nics(data, optional=True))


def _declare(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> codec.Nics:
    return codec.Nics(seq, check.vm_id(data), _nics(data, optional=False) or ())


def _reclaim(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> codec.Reclaim:
    names = data.get("files")
    if names is not None:
        if not isinstance(names, list) or len(names) > codec.MAX_FDS:
            raise check.bad("files", f"a list of at most {codec.MAX_FDS} names", check.shown(names))
        names = tuple(check.name(n) for n in names)
    return codec.Reclaim(seq, check.vm_id(data), names)


def _kexec(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> codec.Kexec:
    kernel = check.optional_str(data, "kernel")
    if not kernel:
        raise check.bad("kernel", "the path of the next kernel image", "missing")
    return codec.Kexec(
        seq, kernel, check.optional_str(data, "initrd"), check.optional_str(data, "cmdline")
    )


def _update(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> codec.Update:
    kexec = _kexec(data, seq, ())
    deadlines = data.get("deadlines") or {}
    if not isinstance(deadlines, dict) or any(
        k not in DEADLINE_PHASES
        or not isinstance(v, int | float)
        or isinstance(v, bool)
        or not 0 < v <= MAX_DEADLINE  # also refuses NaN and Infinity
        for k, v in deadlines.items()
    ):
        raise check.bad(
            "deadlines",
            f"seconds > 0 per phase of {', '.join(DEADLINE_PHASES)}",
            check.shown(deadlines),
        )
    return codec.Update(
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


def _hello(data: dict[str, Any], seq: int | None, _: tuple[OwnedFd, ...]) -> codec.Hello:
    version = data.get("version", codec.VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise check.bad("version", "an integer", check.shown(version))
    asked = data.get("capabilities", [])
    if (
        not isinstance(asked, list)
        or len(asked) > MAX_CAPABILITIES
        or not all(isinstance(c, str) and CAPABILITY.fullmatch(c) for c in asked)
    ):
        raise check.bad(
            "capabilities",
            f'a list of at most {MAX_CAPABILITIES} names like "freeze"',
            check.shown(asked),
        )
    return codec.Hello(seq, version, tuple(asked))


Parser = Callable[[dict[str, Any], int | None, tuple[OwnedFd, ...]], codec.Request]
_PARSERS: Final[dict[str, Parser]] = {
    "HELLO": _hello,
    "REGISTER": _register,
    "NICS": _declare,
    "PRESERVE": _preserve,
    "LIST": lambda d, s, _: codec.ListVms(
        s,
        check.vm_id(d, optional=True),
        check.page_limit(d),
        check.vm_id(d, "after", optional=True),
    ),
    "DROP": lambda d, s, _: codec.Drop(s, check.vm_id(d)),
    "RECLAIM": _reclaim,
    "DONE": lambda d, s, _: codec.Done(s, check.vm_id(d), d.get("force") is True),
    "SUBSCRIBE": lambda d, s, _: codec.Subscribe(s, check.vm_id(d)),
    "READY": lambda d, s, _: codec.Ready(
        s, check.vm_id(d, optional=True), check.optional_str(d, "error")
    ),
    "CLAIM": lambda d, s, _: codec.Claim(s, check.vm_id(d)),
    "STATUS": lambda d, s, _: codec.Status(s),
    "KEXEC": _kexec,
    "UPDATE": _update,
    "ABORT": lambda d, s, _: codec.Abort(s, check.optional_str(d, "reason", 512)),
    "WATCH": lambda d, s, _: codec.Watch(s),
    "HISTORY": lambda d, s, _: codec.History(
        s, check.page_limit(d), check.optional_str(d, "after", 64)
    ),
}
