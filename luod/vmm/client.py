"""A client for luod's VMM socket (api/vmm-protocol.md), blocking (``Client``) and asyncio
(``AsyncClient``). A VMM hands its guest RAM to luod and gets it back after the kexec::

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

Errors luod answers raise ``LuodError`` (``.code``, ``.hint``, ``.errno``). A connection that can
no longer be trusted (EOF, truncated fds, garbage) raises ``ConnectionBroken``. Every fd the
client receives is an ``OwnedFd`` the caller must close; fds the caller sends stay the caller's.
Events that arrive while a reply is awaited are queued for ``wait_event``. A client is not
thread-safe; an ``AsyncClient`` may be shared by tasks of one event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NoReturn, TypeVar

from luod.errors import LuodError
from luod.fdpass import pack_rights, room, unpack_rights
from luod.kernel import OwnedFd, SupportsFileno
from luod.vmm import codec

DEFAULT_SOCKET: Final = "/run/luod/liveupdate.sock"
_ANCILLARY: Final = room(codec.MAX_FDS)
_ENVELOPE: Final = frozenset({"reply", "ok", "seq"})

FileLike = SupportsFileno | int
Files = Mapping[str, FileLike | tuple[FileLike, str]]
Records = list[dict[str, Any]]  # module level: the ``list`` method would shadow it in a class
T = TypeVar("T")


class ConnectionBroken(ConnectionError):
    """The connection to luod is unusable (closed, truncated fds, garbage): open a new client.

    luod keeps custody of everything already handed over; nothing is lost by reconnecting.
    """


@dataclass(frozen=True)
class Event:
    """A message luod pushed: ``name`` (``FREEZE``...), its fields, and the fds it carried."""

    name: str
    data: dict[str, Any]
    fds: tuple[OwnedFd, ...] = ()

    def close(self) -> None:
        _close_all(self.fds)

    def __enter__(self) -> Event:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Reply:
    data: dict[str, Any]
    fds: tuple[OwnedFd, ...]


class _Core:
    """The I/O-free half shared by both clients: seq numbers, frames, reply and event queues."""

    def __init__(self) -> None:
        self._reader = codec.FrameReader()
        self._events: deque[Event] = deque()
        self._replies: dict[int, _Reply] = {}
        self._pending: list[int] = []  # seqs awaiting a reply, oldest first
        self._next_seq = 0
        self.broken: ConnectionBroken | None = None

    def request(self, cmd: str, fields: dict[str, Any]) -> tuple[int, bytes]:
        self.check()
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        given = {key: value for key, value in fields.items() if value is not None}
        line = codec.encode({"cmd": cmd, "seq": seq, **given}).line
        self._pending.append(seq)
        return seq, line

    def abandon(self, seq: int) -> None:
        """Stop waiting for ``seq``: its reply, now or later, is dropped and its fds closed."""
        if seq in self._pending:
            self._pending.remove(seq)
        reply = self._replies.pop(seq, None)
        if reply is not None:
            _close_all(reply.fds)

    def take_reply(self, seq: int) -> _Reply | None:
        return self._replies.pop(seq, None)

    def take_event(self, name: str | None) -> Event | None:
        for event in self._events:
            if name is None or event.name == name.upper():
                self._events.remove(event)
                return event
        return None

    def check(self) -> None:
        if self.broken is not None:  # a fresh exception each time, with the first one's cause
            raise ConnectionBroken(*self.broken.args) from self.broken.__cause__

    def feed(self, data: bytes, fds: list[OwnedFd], truncated: bool) -> None:
        if truncated or not data:
            _close_all(fds)
            why = "fds truncated (MSG_CTRUNC)" if truncated else "luod closed the connection"
            self.fail(ConnectionBroken(why))
        try:
            frames = self._reader.feed(data, fds)
        except LuodError as exc:
            self.fail(ConnectionBroken(f"bad stream from luod: {exc}"), exc)
        for index, frame in enumerate(frames):
            try:
                self._dispatch(frame)
            except LuodError as exc:
                for rest in frames[index:]:
                    _close_all(rest.fds)
                self.fail(ConnectionBroken(f"bad message from luod: {exc}"), exc)

    def fail(self, error: ConnectionBroken, cause: BaseException | None = None) -> NoReturn:
        """Mark the connection unusable and raise; replies and events already queued stay."""
        if self.broken is None:
            error.__cause__ = cause
            self.broken = error
            self._reader.close()
        self.check()
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._reader.close()
        for reply in self._replies.values():
            _close_all(reply.fds)
        for event in self._events:
            event.close()
        self._replies.clear()
        self._events.clear()
        self.broken = self.broken or ConnectionBroken("the client was closed")

    def _dispatch(self, frame: codec.Frame) -> None:
        message = codec.decode_server_message(frame)
        if "event" in message:
            data = {key: value for key, value in message.items() if key != "event"}
            self._events.append(Event(str(message["event"]).upper(), data, frame.fds))
            return
        seq = message.get("seq")
        if seq is None and self._pending:  # luod could not read the seq of our request
            seq = self._pending[0]
        if seq in self._pending:
            self._pending.remove(seq)
            self._replies[seq] = _Reply(message, frame.fds)
        else:  # the answer to a request we stopped waiting for
            _close_all(frame.fds)


# --- the blocking client -------------------------------------------------------------------
class Client:
    """Blocking client. ``timeout`` bounds each request (None: wait as long as luod works)."""

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_SOCKET,
        *,
        timeout: float | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._timeout = timeout
        self._core = _Core()
        self._sock = sock if sock is not None else _connect(path)
        self._sock.setblocking(True)

    def hello(self) -> dict[str, Any]:
        return _body(self._call("HELLO", version=codec.VERSION))

    def register(self, vm: str) -> dict[str, Any]:
        return _field(self._call("REGISTER", id=vm), "vm", dict)

    def preserve(self, vm: str, files: Files) -> Records:
        specs, fds = _file_specs(files)
        return _field(self._call("PRESERVE", fds, id=vm, files=specs), "files", list)

    def list(self, vm: str | None = None) -> Records:
        return _field(self._call("LIST", id=vm), "vms", list)

    def drop(self, vm: str) -> None:
        _body(self._call("DROP", id=vm))

    def reclaim(self, vm: str, names: Iterable[str] | None = None) -> dict[str, OwnedFd]:
        wanted = None if names is None else [*names]
        return _named_fds(self._call("RECLAIM", id=vm, files=wanted))

    def done(self, vm: str, force: bool = False) -> None:
        _body(self._call("DONE", id=vm, force=force or None))

    def subscribe(self, vm: str) -> dict[str, Any]:
        return _body(self._call("SUBSCRIBE", id=vm))

    def ready(self, vm: str | None = None, error: str | None = None) -> None:
        _body(self._call("READY", id=vm, error=error))

    def claim(self, vm: str) -> OwnedFd:
        return _one_fd(self._call("CLAIM", id=vm))

    def status(self) -> dict[str, Any]:
        return _body(self._call("STATUS"))

    def kexec(
        self,
        kernel: str | os.PathLike[str],
        initrd: str | os.PathLike[str] | None = None,
        cmdline: str | None = None,
    ) -> dict[str, Any]:
        initrd = None if initrd is None else os.fspath(initrd)
        return _body(self._call("KEXEC", kernel=os.fspath(kernel), initrd=initrd, cmdline=cmdline))

    def update(self, kernel: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
        """UPDATE (root): options initrd, cmdline, deadlines {phase: s}, dry_run, wait,
        allow_unknown_abi."""
        return _body(self._call("UPDATE", kernel=os.fspath(kernel), **options))

    def abort(self, reason: str | None = None) -> dict[str, Any]:
        return _body(self._call("ABORT", reason=reason))

    def watch(self) -> dict[str, Any]:
        """From now on PHASE / VM_PROGRESS / UPDATE_END events arrive (see wait_event)."""
        return _body(self._call("WATCH"))

    def history(self) -> builtins.list[dict[str, Any]]:
        return list(_body(self._call("HISTORY"))["history"])

    def wait_event(self, name: str | None = None, timeout: float | None = None) -> Event | None:
        """The next event (named ``name``, others stay queued); None once ``timeout`` passed."""
        return self._until(lambda: self._core.take_event(name), timeout)

    def fileno(self) -> int:
        """Poll this for readability, then ``wait_event(timeout=0)`` (for VMM main loops)."""
        return self._sock.fileno()

    def close(self) -> None:
        self._core.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, cmd: str, fds: tuple[int, ...] = (), **fields: Any) -> _Reply:
        seq, line = self._core.request(cmd, fields)
        try:
            self._sock.settimeout(self._timeout)
            _send(self._sock, line, fds, self._core)
            reply = self._until(lambda: self._core.take_reply(seq), self._timeout)
        except BaseException:
            self._core.abandon(seq)
            raise
        if reply is None:
            self._core.abandon(seq)
            raise TimeoutError(f"no reply to {cmd} from luod within {self._timeout} s")
        return reply

    def _until(self, take: Callable[[], T | None], timeout: float | None) -> T | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (got := take()) is None:
            self._core.check()
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            self._sock.settimeout(left)  # 0.0 still reads what is there: a poll
            try:
                chunk = _receive(self._sock)
            except (TimeoutError, BlockingIOError):
                return None
            except OSError as exc:
                self._core.fail(ConnectionBroken(f"receiving from luod: {exc}"), exc)
            self._core.feed(*chunk)
        return got


# --- the asyncio client --------------------------------------------------------------------
class AsyncClient:
    """The same verbs as coroutines: ``async with AsyncClient() as luod: await luod.hello()``."""

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_SOCKET,
        *,
        timeout: float | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._path = path
        self._timeout = timeout
        self._core = _Core()
        self._sock = sock
        self._send_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    async def connect(self) -> AsyncClient:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, os.fspath(self._path))
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        self._sock.setblocking(False)
        return self

    async def hello(self) -> dict[str, Any]:
        return _body(await self._call("HELLO", version=codec.VERSION))

    async def register(self, vm: str) -> dict[str, Any]:
        return _field(await self._call("REGISTER", id=vm), "vm", dict)

    async def preserve(self, vm: str, files: Files) -> Records:
        specs, fds = _file_specs(files)
        return _field(await self._call("PRESERVE", fds, id=vm, files=specs), "files", list)

    async def list(self, vm: str | None = None) -> Records:
        return _field(await self._call("LIST", id=vm), "vms", list)

    async def drop(self, vm: str) -> None:
        _body(await self._call("DROP", id=vm))

    async def reclaim(self, vm: str, names: Iterable[str] | None = None) -> dict[str, OwnedFd]:
        wanted = None if names is None else [*names]
        return _named_fds(await self._call("RECLAIM", id=vm, files=wanted))

    async def done(self, vm: str, force: bool = False) -> None:
        _body(await self._call("DONE", id=vm, force=force or None))

    async def subscribe(self, vm: str) -> dict[str, Any]:
        return _body(await self._call("SUBSCRIBE", id=vm))

    async def ready(self, vm: str | None = None, error: str | None = None) -> None:
        _body(await self._call("READY", id=vm, error=error))

    async def claim(self, vm: str) -> OwnedFd:
        return _one_fd(await self._call("CLAIM", id=vm))

    async def status(self) -> dict[str, Any]:
        return _body(await self._call("STATUS"))

    async def kexec(
        self,
        kernel: str | os.PathLike[str],
        initrd: str | os.PathLike[str] | None = None,
        cmdline: str | None = None,
    ) -> dict[str, Any]:
        initrd = None if initrd is None else os.fspath(initrd)
        reply = await self._call("KEXEC", kernel=os.fspath(kernel), initrd=initrd, cmdline=cmdline)
        return _body(reply)

    async def wait_event(
        self, name: str | None = None, timeout: float | None = None
    ) -> Event | None:
        return await self._until(lambda: self._core.take_event(name), timeout)

    def close(self) -> None:
        self._core.close()
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _connected(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionBroken("not connected: use 'async with' or 'await connect()'")
        return self._sock

    async def _call(self, cmd: str, fds: tuple[int, ...] = (), **fields: Any) -> _Reply:
        sock = self._connected()
        seq, line = self._core.request(cmd, fields)
        try:
            async with self._send_lock:
                await _send_async(sock, line, fds, self._core)
            reply = await self._until(lambda: self._core.take_reply(seq), self._timeout)
        except BaseException:
            self._core.abandon(seq)
            raise
        if reply is None:
            self._core.abandon(seq)
            raise TimeoutError(f"no reply to {cmd} from luod within {self._timeout} s")
        return reply

    async def _until(self, take: Callable[[], T | None], timeout: float | None) -> T | None:
        """Whoever holds the read lock reads for everybody; the others find their share."""
        try:
            async with asyncio.timeout(timeout):
                while (got := take()) is None:
                    async with self._read_lock:
                        if (got := take()) is not None:  # another task read it for us
                            return got
                        await self._read_chunk()
                return got
        except TimeoutError:
            return take()

    async def _read_chunk(self) -> None:
        sock = self._connected()
        self._core.check()
        while True:
            try:
                chunk = _receive(sock)
                break
            except (BlockingIOError, InterruptedError):
                await _io_ready(sock, writing=False)
            except OSError as exc:
                self._core.fail(ConnectionBroken(f"receiving from luod: {exc}"), exc)
        self._core.feed(*chunk)


# --- sockets and fds -----------------------------------------------------------------------
def _connect(path: str | os.PathLike[str]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(path))
    except BaseException:
        sock.close()
        raise
    return sock


def _receive(sock: socket.socket) -> tuple[bytes, list[OwnedFd], bool]:
    """One recvmsg with room for MAX_FDS fds, each wrapped at once; (data, fds, truncated)."""
    data, ancillary, flags, _ = sock.recvmsg(codec.MAX_LINE, _ANCILLARY, socket.MSG_CMSG_CLOEXEC)
    fds = [OwnedFd(n) for n in unpack_rights(ancillary)]
    return data, fds, bool(flags & socket.MSG_CTRUNC)


def _send(sock: socket.socket, line: bytes, fds: tuple[int, ...], core: _Core) -> None:
    """One sendmsg carries the frame and its fds; the rest of a short write follows without."""
    try:
        sent = sock.sendmsg([line], pack_rights(fds))
        if sent < len(line):
            sock.sendall(line[sent:])
    except OSError as exc:
        core.fail(ConnectionBroken(f"sending to luod: {exc}"), exc)


async def _send_async(sock: socket.socket, line: bytes, fds: tuple[int, ...], core: _Core) -> None:
    view, rights = memoryview(line), pack_rights(fds)
    try:
        while view:
            try:
                sent = sock.sendmsg([view], rights)
            except (BlockingIOError, InterruptedError):
                await _io_ready(sock, writing=True)
                continue
            view, rights = view[sent:], []
    except OSError as exc:
        core.fail(ConnectionBroken(f"sending to luod: {exc}"), exc)
    except BaseException:  # cancelled half-way: the stream is cut mid-frame
        if len(view) < len(line):
            core.broken = ConnectionBroken("a request was cut off half-way (cancelled)")
        raise


async def _io_ready(sock: socket.socket, *, writing: bool) -> None:
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    if writing:
        loop.add_writer(sock.fileno(), _wake, woken)
    else:
        loop.add_reader(sock.fileno(), _wake, woken)
    try:
        await woken
    finally:
        (loop.remove_writer if writing else loop.remove_reader)(sock.fileno())


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _close_all(fds: Iterable[OwnedFd]) -> None:
    for fd in fds:
        fd.close()


# --- requests and replies ------------------------------------------------------------------
def _file_specs(files: Files) -> tuple[list[dict[str, str]], tuple[int, ...]]:
    if len(files) > codec.MAX_FDS:
        raise LuodError(
            "too-many-fds",
            f"{len(files)} files in one PRESERVE, at most {codec.MAX_FDS}",
            "send the files in several PRESERVE requests",
        )
    specs, numbers = [], []
    for name, value in files.items():
        fd, kind = value if isinstance(value, tuple) else (value, "memfd")
        specs.append({"name": name, "kind": kind})
        numbers.append(fd if isinstance(fd, int) else fd.fileno())
    return specs, tuple(numbers)


def _body(reply: _Reply, fds: int = 0) -> dict[str, Any]:
    """The reply's fields without the envelope; raises the LuodError of a failed request.

    Stray fds on a reply that takes none are closed; the request still succeeded.
    """
    if reply.data.get("ok") is not True or (fds == 0 and reply.fds):
        _close_all(reply.fds)
    if reply.data.get("ok") is not True:
        raise _error(reply.data)
    if fds and len(reply.fds) != fds:
        _close_all(reply.fds)
        raise LuodError(
            "fd-count-mismatch",
            f"{reply.data.get('reply')} reply came with {len(reply.fds)} fds, expected {fds}",
            "client and luod disagree on the protocol: report it",
        )
    return {key: value for key, value in reply.data.items() if key not in _ENVELOPE}


def _field(reply: _Reply, key: str, kind: type[T]) -> T:
    value = _body(reply).get(key)
    if not isinstance(value, kind):
        raise LuodError("internal", f"{reply.data.get('reply')} reply without {key!r}", "")
    return value


def _one_fd(reply: _Reply) -> OwnedFd:
    _body(reply, fds=1)
    return reply.fds[0]


def _named_fds(reply: _Reply) -> dict[str, OwnedFd]:
    files = reply.data.get("files") if reply.data.get("ok") is True else []
    names = [f.get("name") if isinstance(f, dict) else None for f in files or ()]
    _body(reply, fds=len(names))
    named = {name: fd for name, fd in zip(names, reply.fds, strict=True) if isinstance(name, str)}
    if len(named) != len(names):
        _close_all(reply.fds)
        raise LuodError("internal", "RECLAIM reply with unusable file names", repr(names)[:80])
    return named


def _error(message: dict[str, Any]) -> LuodError:
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
