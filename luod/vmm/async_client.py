"""The asyncio client for luod's VMM socket: ``AsyncClient``, the blocking ``Client``'s methods
as coroutines (``luod.vmm.client`` says how both work; a test keeps their methods the same).
Apart from the blocking client so that a VMM that blocks never imports asyncio.
"""

from __future__ import annotations

import asyncio
import builtins
import socket
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import async_transport, transport, verbs
from luod.vmm.client import DEFAULT_SOCKET, Records
from luod.vmm.protocol import (
    DEFAULT_CAPABILITIES,
    ClientProtocol,
    ConnectionBroken,
    Event,
    close_all,
)
from luod.vmm.verbs import Call, Files, Nics, Reclaimed, StrPath

__all__ = ["AsyncClient"]
T = TypeVar("T")


class AsyncClient:
    """The same methods as coroutines: ``async with AsyncClient() as luod: await luod.hello()``.
    It connects in ``connect()`` (``async with`` calls it)."""

    def __init__(
        self,
        path: StrPath = DEFAULT_SOCKET,
        *,
        timeout: float | None = None,
        sock: socket.socket | None = None,
        capabilities: Iterable[str] | None = DEFAULT_CAPABILITIES,
        wait: float = 0.0,
    ) -> None:
        self._path = path
        self._wait = wait
        self._timeout = timeout
        self._protocol = ClientProtocol(capabilities)
        self._sock = sock
        self._send_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    async def connect(self) -> AsyncClient:
        if self._sock is None:
            self._sock = await async_transport.connect_async(self._path, wait=self._wait)
        self._sock.setblocking(False)
        return self

    @property
    def granted(self) -> frozenset[str] | None:
        """The capabilities luod granted (None until negotiated: luo-agent's dialect)."""
        return self._protocol.granted

    async def hello(self, capabilities: Iterable[str] | None = None) -> dict[str, Any]:
        return await self._call(verbs.hello(capabilities))

    async def register(self, vm: str, nics: Nics | None = None) -> dict[str, Any]:
        """``nics``: the VM's taps (names, or (name, bridge)), rebuilt after the kexec."""
        return await self._call(verbs.register(vm, nics))

    async def nics(self, vm: str, nics: Nics) -> dict[str, Any]:
        """Replace the VM's declared network devices (NICS); [] withdraws them."""
        return await self._call(verbs.nics(vm, nics))

    async def preserve(self, vm: str, files: Files) -> Records:
        return await self._call(verbs.preserve(vm, files))

    async def list(self, vm: str | None = None) -> Records:
        """Every page of LIST (api/vmm-protocol.md: LIST pages by ``next``)."""
        records, after = await self._call(verbs.list_vms(vm))
        while after is not None:
            more, after = await self._call(verbs.list_vms(vm, after))
            records += more
        return records

    async def drop(self, vm: str) -> None:
        await self._call(verbs.drop(vm))

    async def reclaim(self, vm: str, names: Iterable[str] | None = None) -> Reclaimed:
        """The files by name, in as many RECLAIMs as one reply's fds need; ``.nics``: whether
        the VM's declared NICs are ready."""
        if names is None:
            try:
                return await self._call(verbs.reclaim(vm, None))
            except LuodError as exc:
                if exc.code != "too-many-fds":
                    raise
            names = verbs.file_names(await self.list(vm))
        got = Reclaimed()
        try:
            for batch in verbs.batches(names):
                more = await self._call(verbs.reclaim(vm, batch))
                got.update(more)
                got.nics = more.nics
        except BaseException:
            close_all(got.values())
            raise
        return got

    async def done(self, vm: str, force: bool = False) -> None:
        await self._call(verbs.done(vm, force))

    async def subscribe(self, vm: str) -> dict[str, Any]:
        return await self._call(verbs.subscribe(vm))

    async def ready(self, vm: str | None = None, error: str | None = None) -> None:
        await self._call(verbs.ready(vm, error))

    async def claim(self, vm: str) -> OwnedFd:
        return await self._call(verbs.claim(vm))

    async def status(self) -> dict[str, Any]:
        return await self._call(verbs.status())

    async def kexec(
        self, kernel: StrPath, initrd: StrPath | None = None, cmdline: str | None = None
    ) -> dict[str, Any]:
        return await self._call(verbs.kexec(kernel, initrd, cmdline))

    async def update(self, kernel: StrPath, **options: Any) -> dict[str, Any]:
        """UPDATE (root): options initrd, cmdline, deadlines {phase: s}, dry_run, wait,
        allow_unknown_abi."""
        return await self._call(verbs.update(kernel, options))

    async def abort(self, reason: str | None = None) -> dict[str, Any]:
        return await self._call(verbs.abort(reason))

    async def watch(self) -> dict[str, Any]:
        """From now on PHASE / VM_PROGRESS / UPDATE_END events arrive (see wait_event)."""
        return await self._call(verbs.watch())

    async def history(self) -> builtins.list[dict[str, Any]]:
        """Every page of HISTORY, oldest first."""
        records, after = await self._call(verbs.history())
        while after is not None:
            more, after = await self._call(verbs.history(after))
            records += more
        return records

    async def wait_event(
        self, name: str | None = None, timeout: float | None = None
    ) -> Event | None:
        """The next event (named ``name``, others stay queued); None once ``timeout`` passed."""
        return await self._until(lambda: self._protocol.next_event(name), timeout)

    def fileno(self) -> int:
        """The socket's fd (to poll it), once connected."""
        return self._connected().fileno()

    def close(self) -> None:
        self._protocol.close()
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

    async def _call(self, call: Call[T]) -> T:
        sock = self._connected()
        seq = self._protocol.send(call.cmd, call.fields, call.fds)
        try:
            async with self._send_lock:  # frames leave in the order they were queued
                while (frame := self._protocol.next_frame()) is not None:
                    await async_transport.send_async(sock, frame, self._protocol)
            reply = await self._until(lambda: self._protocol.next_reply(seq), self._timeout)
        except BaseException:
            self._protocol.abandon(seq)
            raise
        if reply is None:
            self._protocol.abandon(seq)
            raise TimeoutError(f"no reply to {call.cmd} from luod within {self._timeout} s")
        return call.parse(reply)

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
        self._protocol.check()
        while True:
            try:
                chunk = transport.receive(sock)
                break
            except (BlockingIOError, InterruptedError):
                await async_transport.io_ready(sock, writing=False)
            except OSError as exc:
                self._protocol.fail(ConnectionBroken(f"receiving from luod: {exc}"), exc)
        self._protocol.receive_data(*chunk)
