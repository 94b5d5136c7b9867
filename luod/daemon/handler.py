"""Maps each VMM socket request onto the core (registry, reclaim, handoff). No logic of its own
beyond who-may-do-what at the transport level; kernel work runs off the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

import luod
from luod.core import handoff, reclaim
from luod.core.model import Mode, VmRecord
from luod.core.registry import Registry
from luod.errors import LuodError
from luod.kernel.sim import SimulatedKexec
from luod.vmm import codec
from luod.vmm.server import Connection

log = structlog.get_logger("luod.handler")
READY_DEADLINE = 30.0
INLINE_BYTES = 1 << 20  # below this a preserve takes microseconds: no thread hop


class LuodHandler:
    def __init__(self, registry: Registry, on_kexec: Callable[[], None]) -> None:
        self.registry = registry
        self.on_kexec = on_kexec
        self.lock = asyncio.Lock()  # one registry operation at a time
        self.subscribers: dict[str, Connection] = {}
        self.ready: dict[str, asyncio.Future[str | None]] = {}
        self.phase = "idle"

    async def handle(self, conn: Connection, request: codec.Request) -> codec.Outgoing:
        method = getattr(self, "_" + request.cmd.lower())
        result: tuple[dict[str, Any], tuple[Any, ...]] = await method(conn, request)
        body, fds = result
        return codec.encode(codec.ok_reply(request.cmd, request.seq, body), fds)

    def disconnected(self, conn: Connection) -> None:
        for vm_id in [v for v, c in self.subscribers.items() if c is conn]:
            del self.subscribers[vm_id]
            log.info("subscriber-gone", vm=vm_id, note="luod keeps the session")

    async def _run(self, call: Callable[..., Any], *args: Any, inline: bool = False) -> Any:
        """Run a core call under the registry lock; off the loop unless it is known small
        (preserve and retrieve are linear in size, CONTRACT §5.2)."""
        async with self.lock:
            if inline:
                return call(*args)
            return await asyncio.to_thread(call, *args)

    # --- verbs ------------------------------------------------------------------------------
    async def _hello(self, conn: Connection, req: codec.Hello) -> Any:
        info = {
            "protocol": codec.PROTOCOL,
            "version": codec.VERSION,
            "server": f"luod {luod.__version__}",
        }
        return info, ()

    async def _register(self, conn: Connection, req: codec.Register) -> Any:
        vm = await self._run(self.registry.register, conn.peer, req.id, Mode.HANDOVER, inline=True)
        return {"vm": _vm(vm)}, ()

    async def _preserve(self, conn: Connection, req: codec.Preserve) -> Any:
        small = sum(os.fstat(fd.fileno()).st_size for fd in req.fds) < INLINE_BYTES
        files = await self._run(
            self.registry.preserve, conn.peer, req.id, req.files, req.fds, inline=small
        )
        return {"files": [_file(f) for f in files]}, ()

    async def _list(self, conn: Connection, req: codec.ListVms) -> Any:
        return {"vms": [_vm(v) for v in self.registry.listing(conn.peer, req.id)]}, ()

    async def _drop(self, conn: Connection, req: codec.Drop) -> Any:
        await self._run(self.registry.drop, conn.peer, req.id)
        return {}, ()

    async def _reclaim(self, conn: Connection, req: codec.Reclaim) -> Any:
        pairs = await self._run(reclaim.reclaim, self.registry, conn.peer, req.id, req.names)
        return {"files": [_file(f) for f, _ in pairs]}, tuple(fd for _, fd in pairs)

    async def _done(self, conn: Connection, req: codec.Done) -> Any:
        await self._run(reclaim.done, self.registry, conn.peer, req.id, req.force)
        return {}, ()

    async def _subscribe(self, conn: Connection, req: codec.Subscribe) -> Any:
        vm = await self._run(self.registry.register, conn.peer, req.id, Mode.DELEGATION)
        self.subscribers[req.id] = conn
        conn.subscribed.add(req.id)
        return {"vm": _vm(vm)}, ()

    async def _ready(self, conn: Connection, req: codec.Ready) -> Any:
        vm_id = req.id or _only(conn.subscribed)
        self.registry.get(vm_id, conn.peer)
        waiter = self.ready.get(vm_id)
        if waiter is None or waiter.done():
            raise LuodError("wrong-state", f"nothing asked VM {vm_id!r} to be READY", "")
        waiter.set_result(req.error)
        if req.error is None:
            await self._run(self.registry.mark_ready, conn.peer, vm_id)
        return {}, ()

    async def _claim(self, conn: Connection, req: codec.Claim) -> Any:
        fd = await self._run(reclaim.claim, self.registry, conn.peer, req.id)
        return {}, (fd,)

    async def _status(self, conn: Connection, req: codec.Status) -> Any:
        info = self.registry.info
        return {
            "phase": self.phase,
            "vms": len(self.registry.vms),
            "kernel": info.release,
            "liveupdate_number": info.liveupdate_number,
            "backend": self.registry.backend.name,
        }, ()

    async def _kexec(self, conn: Connection, req: codec.Kexec) -> Any:
        if conn.peer.uid != 0:
            raise LuodError("not-allowed", "KEXEC needs root", "ask the host operator")
        self.phase = "preparing"
        try:
            initrd = Path(req.initrd) if req.initrd else None
            await self._run(
                handoff.load_next_kernel, self.registry, Path(req.kernel), initrd, req.cmdline
            )
            await self._collect_delegated()
            self.phase = "rebooting"
            try:
                await self._run(handoff.kexec_direct, self.registry)
            except SimulatedKexec:
                self.on_kexec()
                return {"simulated": True}, ()
        finally:
            self.phase = "idle"
        return {}, ()

    async def _collect_delegated(self) -> None:
        """START_PRESERVATION to every subscriber, then wait for each READY (bounded)."""
        delegated = [v for v in self.registry.vms.values() if v.mode is Mode.DELEGATION]
        loop = asyncio.get_running_loop()
        for vm in delegated:
            conn = self.subscribers.get(vm.id)
            if conn is None:
                continue  # its VMM is gone: the session is still held and carried as is
            self.ready[vm.id] = loop.create_future()
            fd = self.registry.delegate_fd(vm)
            conn.push(codec.encode(codec.event("START_PRESERVATION", id=vm.id), (fd,)))
        try:
            async with asyncio.timeout(READY_DEADLINE):
                errors = {v: await f for v, f in self.ready.items()}
        except TimeoutError as exc:
            late = [v for v, f in self.ready.items() if not f.done()]
            raise LuodError(
                "ready-timeout",
                f"no READY from {', '.join(late)}",
                f"delegated VMMs must answer READY within {READY_DEADLINE:.0f} s",
            ) from exc
        finally:
            self.ready.clear()
        refused = {v: e for v, e in errors.items() if e}
        if refused:
            raise LuodError(
                "ready-refused", f"READY with error: {refused}", "fix the VMM and retry"
            )


def _only(ids: set[str]) -> str:
    if len(ids) != 1:
        raise LuodError(
            "bad-request", "READY without id on a connection with several VMs", "add the id"
        )
    return next(iter(ids))


def _vm(vm: VmRecord) -> dict[str, Any]:
    return {
        "id": vm.id,
        "mode": str(vm.mode),
        "state": str(vm.state),
        "owner_uid": vm.owner.uid,
        "session": vm.session,
        "files": [_file(f) for f in vm.files.values()],
        "note": vm.note,
    }


def _file(record: Any) -> dict[str, Any]:
    return {
        "name": record.name,
        "token": record.token,
        "kind": record.kind,
        "size": record.size,
        "reclaimed": record.reclaimed,
    }
