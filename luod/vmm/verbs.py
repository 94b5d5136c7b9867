"""Every verb of luod's VMM protocol as data: the request to send and how to read its reply.

Pure (no I/O): a ``Call`` names the command, its fields and the caller's fds to attach, and
``parse`` turns luod's ``Reply`` into what the client method returns, or raises the request's
``LuodError``. Both client shells (``luod.vmm.client``) run the same calls, so they return the
same things and fail the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Generic, NamedTuple, TypeVar

from luod.errors import LuodError
from luod.kernel import OwnedFd, SupportsFileno
from luod.vmm import framing
from luod.vmm.protocol import Reply, close_all

T = TypeVar("T")
FileLike = SupportsFileno | int
Files = Mapping[str, FileLike | tuple[FileLike, str]]
StrPath = str | os.PathLike[str]
Nics = Iterable[str | tuple[str, str | None]]
"""Network devices a VM uses: a tap's name, or (name, the bridge it sits on)."""
_ENVELOPE: Final = frozenset({"reply", "ok", "seq"})


class Call(NamedTuple, Generic[T]):
    cmd: str
    parse: Callable[[Reply], T]
    fields: dict[str, Any]
    fds: tuple[int, ...] = ()


def hello(capabilities: Iterable[str] | None) -> Call[dict[str, Any]]:
    wanted = None if capabilities is None else list(capabilities)
    return Call("HELLO", body, {"version": framing.VERSION, "capabilities": wanted})


def register(vm: str, nics: Nics | None = None) -> Call[dict[str, Any]]:
    fields = {"id": vm, "nics": None if nics is None else nic_specs(nics)}
    return Call("REGISTER", lambda r: field_of(r, "vm", dict), fields)


def nics(vm: str, nics: Nics) -> Call[dict[str, Any]]:
    return Call("NICS", lambda r: field_of(r, "vm", dict), {"id": vm, "nics": nic_specs(nics)})


def preserve(vm: str, files: Files) -> Call[list[dict[str, Any]]]:
    specs, fds = file_specs(files)
    return Call("PRESERVE", lambda r: field_of(r, "files", list), {"id": vm, "files": specs}, fds)


Page = tuple[list[dict[str, Any]], str | None]


def list_vms(vm: str | None, after: str | None = None) -> Call[Page]:
    """One page of LIST; the shells ask for the next while ``next`` is not None."""
    return Call("LIST", lambda r: paged(r, "vms"), {"id": vm, "after": after})


def drop(vm: str) -> Call[None]:
    return Call("DROP", nothing, {"id": vm})


def reclaim(vm: str, names: Iterable[str] | None) -> Call[Reclaimed]:
    wanted = None if names is None else [*names]
    return Call("RECLAIM", named_fds, {"id": vm, "files": wanted})


def batches(names: Iterable[str]) -> list[list[str]]:
    """File names in groups of MAX_FDS: one RECLAIM reply carries at most that many fds."""
    every = [*names]
    return [every[i : i + framing.MAX_FDS] for i in range(0, len(every), framing.MAX_FDS)]


def file_names(vms: list[dict[str, Any]]) -> list[str]:
    """The names of the one VM's files in a LIST answer."""
    return [str(f["name"]) for vm in vms for f in vm.get("files", [])]


def done(vm: str, force: bool) -> Call[None]:
    return Call("DONE", nothing, {"id": vm, "force": force or None})


def subscribe(vm: str) -> Call[dict[str, Any]]:
    return Call("SUBSCRIBE", body, {"id": vm})


def ready(vm: str | None, error: str | None) -> Call[None]:
    return Call("READY", nothing, {"id": vm, "error": error})


def claim(vm: str) -> Call[OwnedFd]:
    return Call("CLAIM", one_fd, {"id": vm})


def status() -> Call[dict[str, Any]]:
    return Call("STATUS", body, {})


def kexec(kernel: StrPath, initrd: StrPath | None, cmdline: str | None) -> Call[dict[str, Any]]:
    paths = {"kernel": os.fspath(kernel), "initrd": None if initrd is None else os.fspath(initrd)}
    return Call("KEXEC", body, {**paths, "cmdline": cmdline})


def update(kernel: StrPath, options: dict[str, Any]) -> Call[dict[str, Any]]:
    initrd = options.get("initrd")
    paths = {"kernel": os.fspath(kernel), "initrd": None if initrd is None else os.fspath(initrd)}
    return Call("UPDATE", body, {**options, **paths})


def abort(reason: str | None) -> Call[dict[str, Any]]:
    return Call("ABORT", body, {"reason": reason})


def watch() -> Call[dict[str, Any]]:
    return Call("WATCH", body, {})


def history(after: str | None = None) -> Call[Page]:
    return Call("HISTORY", lambda r: paged(r, "history"), {"after": after})


# --- requests and replies ------------------------------------------------------------------
class Reclaimed(dict[str, OwnedFd]):
    """RECLAIM's fds by file name; ``nics``: the state of the VM's declared network devices
    after the reboot (``ready``, ``exact``, ``problems``, ``devices``), None when it declared
    none (api/vmm-protocol.md, RECLAIM)."""

    nics: dict[str, Any] | None = None


def nic_specs(nics: Nics) -> list[dict[str, str]]:
    specs = []
    for nic in nics:
        name, bridge = (nic, None) if isinstance(nic, str) else nic
        specs.append({"name": name} | ({"bridge": bridge} if bridge else {}))
    return specs


def file_specs(files: Files) -> tuple[list[dict[str, str]], tuple[int, ...]]:
    if len(files) > framing.MAX_FDS:
        raise LuodError(
            "too-many-fds",
            f"{len(files)} files in one PRESERVE, at most {framing.MAX_FDS}",
            "send the files in several PRESERVE requests",
        )
    specs, numbers = [], []
    for name, value in files.items():
        fd, kind = value if isinstance(value, tuple) else (value, "memfd")
        specs.append({"name": name, "kind": kind})
        numbers.append(fd if isinstance(fd, int) else fd.fileno())
    return specs, tuple(numbers)


def body(reply: Reply, fds: int = 0) -> dict[str, Any]:
    """The reply's fields without the envelope; raises the LuodError of a failed request.

    Stray fds on a reply that takes none are closed; the request still succeeded.
    """
    if reply.data.get("ok") is not True or (fds == 0 and reply.fds):
        close_all(reply.fds)
    if reply.data.get("ok") is not True:
        raise error_of(reply.data)
    if fds and len(reply.fds) != fds:
        close_all(reply.fds)
        raise LuodError(
            "fd-count-mismatch",
            f"{reply.data.get('reply')} reply came with {len(reply.fds)} fds, expected {fds}",
            "client and luod disagree on the protocol: report it",
        )
    return {key: value for key, value in reply.data.items() if key not in _ENVELOPE}


def nothing(reply: Reply) -> None:
    body(reply)


def field_of(reply: Reply, key: str, kind: type[T]) -> T:
    value = body(reply).get(key)
    if not isinstance(value, kind):
        raise LuodError("internal", f"{reply.data.get('reply')} reply without {key!r}", "")
    return value


def paged(reply: Reply, key: str) -> Page:
    """A page's items and its ``next`` cursor (absent from a luod that does not page)."""
    items = field_of(reply, key, list)
    following = reply.data.get("next")
    return items, following if isinstance(following, str) else None


def one_fd(reply: Reply) -> OwnedFd:
    body(reply, fds=1)
    return reply.fds[0]


def named_fds(reply: Reply) -> Reclaimed:
    files = reply.data.get("files") if reply.data.get("ok") is True else []
    names = [f.get("name") if isinstance(f, dict) else None for f in files or ()]
    body(reply, fds=len(names))
    named = {name: fd for name, fd in zip(names, reply.fds, strict=True) if isinstance(name, str)}
    if len(named) != len(names):
        close_all(reply.fds)
        raise LuodError("internal", "RECLAIM reply with unusable file names", repr(names)[:80])
    reclaimed = Reclaimed(named)
    nics = reply.data.get("nics")
    reclaimed.nics = nics if isinstance(nics, dict) else None
    return reclaimed


def error_of(message: dict[str, Any]) -> LuodError:
    error = message.get("error")
    error = error if isinstance(error, dict) else {}
    errno = error.get("errno")
    exc = LuodError(
        str(error.get("code", "internal")),
        str(error.get("message", "luod refused the request")),
        str(error.get("hint", "")),
        errno if isinstance(errno, int) and not isinstance(errno, bool) else None,
    )
    seq = message.get("seq")
    exc.seq = seq if isinstance(seq, int) else None
    exc.cmd = message.get("reply") if isinstance(message.get("reply"), str) else None
    return exc
