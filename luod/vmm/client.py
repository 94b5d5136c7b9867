"""A client for luod's VMM socket (api/vmm-protocol.md), blocking (``Client``) and asyncio
(``AsyncClient``, in ``luod.vmm.async_client``; this module names it too, loading it on first
use), with the same methods. A VMM hands its guest RAM to luod and gets it back
after the kexec::

    import os
    from luod.vmm.client import Client

    ram = os.memfd_create("vm1-ram0")              # the guest RAM the VMM already has
    os.ftruncate(ram, 256 << 20)
    with Client() as luod:                          # /run/luod/liveupdate.sock
        luod.register("vm1")
        luod.preserve("vm1", {"ram0": ram})         # preserved in LUO session luod.vm1
        if luod.wait_event("FREEZE", timeout=3600):  # an update: pause the vCPUs, then
            luod.ready("vm1")
    # after the kexec, in the new VMM process:
    with Client() as luod:
        ram0 = luod.reclaim("vm1")["ram0"]          # an OwnedFd: the same bytes
        luod.done("vm1")                            # luod FINISHes the session

Both are thin shells over one sans-I/O protocol object (``luod.vmm.protocol``) and one table of
verbs (``luod.vmm.verbs``): they only move bytes and fds (``luod.vmm.transport``,
``luod.vmm.async_transport``). A VMM that blocks never imports asyncio (about a third of this
module's import cost, and every VMM starts again right after a kexec: issue 17). Before its
first request a client asks luod for every capability of luod's dialect (FREEZE, RESUME,
progress events, DONE after CLAIM); ``capabilities=None`` speaks luo-agent's dialect instead
(§2a of the spec).

Errors luod answers raise ``LuodError`` (``.code``, ``.hint``, ``.errno``). A connection that can
no longer be trusted (EOF, truncated fds, garbage) raises ``ConnectionBroken``. Every fd the
client receives is an ``OwnedFd`` the caller must close; fds the caller sends stay the caller's.
Events that arrive while a reply is awaited are queued for ``wait_event``. A client is not
thread-safe; an ``AsyncClient`` may be shared by tasks of one event loop.
"""

from __future__ import annotations

import builtins
import importlib
import socket
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import transport, verbs
from luod.vmm.protocol import (
    DEFAULT_CAPABILITIES,
    ClientProtocol,
    ConnectionBroken,
    Event,
    close_all,
)
from luod.vmm.verbs import Call, Files, Nics, Reclaimed, StrPath

if TYPE_CHECKING:
    from luod.vmm.async_client import AsyncClient

__all__ = ["DEFAULT_SOCKET", "AsyncClient", "Client", "ConnectionBroken", "Event", "LuodError"]
DEFAULT_SOCKET: Final = "/run/luod/liveupdate.sock"
Records = list[dict[str, Any]]  # module level: the ``list`` method would shadow it in a class
T = TypeVar("T")


def __getattr__(name: str) -> object:
    """``AsyncClient`` on first use (PEP 562): importing it imports asyncio."""
    if name != "AsyncClient":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module("luod.vmm.async_client").AsyncClient
    globals()[name] = value
    return value


# --- the blocking client -------------------------------------------------------------------
class Client:
    """Blocking client, connected at once. ``timeout`` bounds each request (None: as long as
    luod works); ``capabilities`` is what it asks for in HELLO (None: sends no HELLO);
    ``wait``: seconds to wait for luod's socket to appear (a VMM started with luod)."""

    def __init__(
        self,
        path: StrPath = DEFAULT_SOCKET,
        *,
        timeout: float | None = None,
        sock: socket.socket | None = None,
        capabilities: Iterable[str] | None = DEFAULT_CAPABILITIES,
        wait: float = 0.0,
    ) -> None:
        self._timeout = timeout
        self._protocol = ClientProtocol(capabilities)
        self._sock = sock if sock is not None else transport.connect(path, wait)
        self._sock.setblocking(True)

    def connect(self) -> Client:
        return self  # connected in __init__; here for parity with AsyncClient

    @property
    def granted(self) -> frozenset[str] | None:
        """The capabilities luod granted (None until negotiated: luo-agent's dialect)."""
        return self._protocol.granted

    def hello(self, capabilities: Iterable[str] | None = None) -> dict[str, Any]:
        return self._call(verbs.hello(capabilities))

    def register(self, vm: str, nics: Nics | None = None) -> dict[str, Any]:
        """``nics``: the VM's taps (names, or (name, bridge)), rebuilt after the kexec."""
        return self._call(verbs.register(vm, nics))

    def nics(self, vm: str, nics: Nics) -> dict[str, Any]:
        """Replace the VM's declared network devices (NICS); [] withdraws them."""
        return self._call(verbs.nics(vm, nics))

    def preserve(self, vm: str, files: Files) -> Records:
        return self._call(verbs.preserve(vm, files))

    def list(self, vm: str | None = None) -> Records:
        """Every page of LIST (api/vmm-protocol.md: LIST pages by ``next``)."""
        records, after = self._call(verbs.list_vms(vm))
        while after is not None:
            more, after = self._call(verbs.list_vms(vm, after))
            records += more
        return records

    def drop(self, vm: str) -> None:
        self._call(verbs.drop(vm))

    def reclaim(self, vm: str, names: Iterable[str] | None = None) -> Reclaimed:
        """The files by name, in as many RECLAIMs as one reply's fds need; ``.nics``: whether
        the VM's declared NICs are ready."""
        if names is None:
            try:
                return self._call(verbs.reclaim(vm, None))
            except LuodError as exc:
                if exc.code != "too-many-fds":
                    raise
            names = verbs.file_names(self.list(vm))
        got = Reclaimed()
        try:
            for batch in verbs.batches(names):
                more = self._call(verbs.reclaim(vm, batch))
                got.update(more)
                got.nics = more.nics
        except BaseException:
            close_all(got.values())
            raise
        return got

    def done(self, vm: str, force: bool = False) -> None:
        self._call(verbs.done(vm, force))

    def subscribe(self, vm: str) -> dict[str, Any]:
        return self._call(verbs.subscribe(vm))

    def ready(self, vm: str | None = None, error: str | None = None) -> None:
        self._call(verbs.ready(vm, error))

    def claim(self, vm: str) -> OwnedFd:
        return self._call(verbs.claim(vm))

    def status(self) -> dict[str, Any]:
        return self._call(verbs.status())

    def kexec(
        self, kernel: StrPath, initrd: StrPath | None = None, cmdline: str | None = None
    ) -> dict[str, Any]:
        return self._call(verbs.kexec(kernel, initrd, cmdline))

    def update(self, kernel: StrPath, **options: Any) -> dict[str, Any]:
        """UPDATE (root): options initrd, cmdline, deadlines {phase: s}, dry_run, wait,
        allow_unknown_abi."""
        return self._call(verbs.update(kernel, options))

    def abort(self, reason: str | None = None) -> dict[str, Any]:
        return self._call(verbs.abort(reason))

    def watch(self) -> dict[str, Any]:
        """From now on PHASE / VM_PROGRESS / UPDATE_END events arrive (see wait_event)."""
        return self._call(verbs.watch())

    def history(self) -> builtins.list[dict[str, Any]]:
        """Every page of HISTORY, oldest first."""
        records, after = self._call(verbs.history())
        while after is not None:
            more, after = self._call(verbs.history(after))
            records += more
        return records

    def wait_event(self, name: str | None = None, timeout: float | None = None) -> Event | None:
        """The next event (named ``name``, others stay queued); None once ``timeout`` passed."""
        return self._until(lambda: self._protocol.next_event(name), timeout)

    def fileno(self) -> int:
        """Poll this for readability, then ``wait_event(timeout=0)`` (for VMM main loops)."""
        return self._sock.fileno()

    def close(self) -> None:
        self._protocol.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, call: Call[T]) -> T:
        seq = self._protocol.send(call.cmd, call.fields, call.fds)
        try:
            self._sock.settimeout(self._timeout)
            while (frame := self._protocol.next_frame()) is not None:
                transport.send(self._sock, frame, self._protocol)
            reply = self._until(lambda: self._protocol.next_reply(seq), self._timeout)
        except BaseException:
            self._protocol.abandon(seq)
            raise
        if reply is None:
            self._protocol.abandon(seq)
            raise TimeoutError(f"no reply to {call.cmd} from luod within {self._timeout} s")
        return call.parse(reply)

    def _until(self, take: Callable[[], T | None], timeout: float | None) -> T | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (got := take()) is None:
            self._protocol.check()
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            self._sock.settimeout(left)  # 0.0 still reads what is there: a poll
            try:
                chunk = transport.receive(self._sock)
            except (TimeoutError, BlockingIOError):
                return None
            except OSError as exc:
                self._protocol.fail(ConnectionBroken(f"receiving from luod: {exc}"), exc)
            self._protocol.receive_data(*chunk)
        return got
