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
from luod.core import dialect, reclaim, timeline
from luod.core.model import Mode, VmRecord
from luod.core.registry import Registry
from luod.daemon.update import UpdateDriver, UpdateRequest
from luod.errors import LuodError
from luod.vmm import codec
from luod.vmm.server import Connection

log = structlog.get_logger("luod.handler")
INLINE_BYTES = 128 << 20
"""Below this a preserve costs at most tens of ms of kernel time: done on the loop, since the
thread hop costs more than it saves. Above it (GiBs of guest RAM take seconds, docs/kernel.md §6.2)
it runs in a worker thread so other clients keep being served."""


class LuodHandler:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.lock = asyncio.Lock()  # one registry operation at a time
        self.clients: dict[str, Connection] = {}  # vm id -> its VMM's live connection
        self.watchers: set[Connection] = set()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # e.g. the REST event stream
        self.driver: UpdateDriver  # set by the daemon once the task group exists

    async def handle(self, conn: Connection, request: codec.Request) -> codec.Outgoing:
        if not isinstance(request, codec.Hello):
            self.registry.policy.check(conn.peer)
        method = getattr(self, "_" + request.cmd.lower())
        result: tuple[dict[str, Any], tuple[Any, ...]] = await method(conn, request)
        body, fds = result
        return codec.encode(codec.ok_reply(request.cmd, request.seq, body), fds)

    def disconnected(self, conn: Connection) -> None:
        self.watchers.discard(conn)
        for vm_id in [v for v, c in self.clients.items() if c is conn]:
            del self.clients[vm_id]
            log.info("vmm-gone", vm=vm_id, note="luod keeps the session")
            self.driver.vmm_gone(vm_id)

    async def _run(self, call: Callable[..., Any], *args: Any, inline: bool = False) -> Any:
        """Run a core call under the registry lock; off the loop unless it is known small
        (preserve and retrieve are linear in size, docs/kernel.md §6.2)."""
        async with self.lock:
            if inline:
                return call(*args)
            return await asyncio.to_thread(call, *args)

    # --- verbs ------------------------------------------------------------------------------
    async def _hello(self, conn: Connection, req: codec.Hello) -> Any:
        conn.capabilities = dialect.grant(req.capabilities)
        info = {
            "protocol": codec.PROTOCOL,
            "version": codec.VERSION,
            "server": f"luod {luod.__version__}",
            "capabilities": sorted(conn.capabilities),
            "supported": sorted(dialect.ALL),
        }
        return info, ()

    async def _register(self, conn: Connection, req: codec.Register) -> Any:
        if req.id not in self.registry.vms:
            self.driver.refuse_new_vms()
        vm = await self._run(self.registry.register, conn.peer, req.id, Mode.HANDOVER, inline=True)
        self._track(conn, req.id)
        return {"vm": _vm(vm)}, ()

    async def _preserve(self, conn: Connection, req: codec.Preserve) -> Any:
        small = sum(os.fstat(fd.fileno()).st_size for fd in req.fds) < INLINE_BYTES
        files = await self._run(
            self.registry.preserve, conn.peer, req.id, req.files, req.fds, inline=small
        )
        self._track(conn, req.id)
        return {"files": [_file(f) for f in files]}, ()

    async def _list(self, conn: Connection, req: codec.ListVms) -> Any:
        return {"vms": [_vm(v) for v in self.registry.listing(conn.peer, req.id)]}, ()

    async def _drop(self, conn: Connection, req: codec.Drop) -> Any:
        await self._run(self.registry.drop, conn.peer, req.id)
        return {}, ()

    async def _reclaim(self, conn: Connection, req: codec.Reclaim) -> Any:
        pairs = await self._run(reclaim.reclaim, self.registry, conn.peer, req.id, req.names)
        self._track(conn, req.id)
        self.driver.vm_step(req.id, "reclaimed")
        return {"files": [_file(f) for f, _ in pairs]}, tuple(fd for _, fd in pairs)

    async def _done(self, conn: Connection, req: codec.Done) -> Any:
        await self._run(reclaim.done, self.registry, conn.peer, req.id, req.force)
        self.clients.pop(req.id, None)
        self.driver.vm_step(req.id, "done")
        return {}, ()

    async def _subscribe(self, conn: Connection, req: codec.Subscribe) -> Any:
        if req.id not in self.registry.vms:
            self.driver.refuse_new_vms()
        vm = await self._run(self.registry.register, conn.peer, req.id, Mode.DELEGATION)
        self._track(conn, req.id)
        return {"vm": _vm(vm)}, ()

    async def _ready(self, conn: Connection, req: codec.Ready) -> Any:
        vm_id = req.id or _only(conn.subscribed)
        vm = self.registry.get(vm_id, conn.peer)
        if not self.driver.ready(vm_id, req.error):
            raise LuodError(
                "wrong-state",
                f"nothing asked VM {vm_id!r} to be READY",
                "READY answers START_PRESERVATION or FREEZE",
            )
        if req.error is None and vm.mode is Mode.DELEGATION:
            await self._run(self.registry.mark_ready, conn.peer, vm_id, inline=True)
        return {}, ()

    async def _claim(self, conn: Connection, req: codec.Claim) -> Any:
        fd = await self._run(reclaim.claim, self.registry, conn.peer, req.id)
        self.driver.vm_step(req.id, "reclaimed")
        if dialect.claim_ends_custody(conn.capabilities):  # luo-agent: no DONE will come
            try:
                await self._run(reclaim.done, self.registry, conn.peer, req.id, False)
            except BaseException:
                fd.close()
                raise
            self.clients.pop(req.id, None)
            self.driver.vm_step(req.id, "done")
        return {}, (fd,)

    async def _status(self, conn: Connection, req: codec.Status) -> Any:
        info = self.registry.info
        return {
            "phase": str(self.driver.machine.phase),
            "vms": len(self.registry.vms),
            "kernel": info.release,
            "liveupdate_number": info.liveupdate_number,
            "backend": self.registry.backend.name,
        }, ()

    async def _update(self, conn: Connection, req: codec.Update, verb: str = "UPDATE") -> Any:
        _root_only(conn, verb)
        request = UpdateRequest(
            Path(req.kernel),
            Path(req.initrd) if req.initrd else None,
            req.cmdline,
            dict(req.deadlines),
            req.dry_run,
            conn.peer.uid,
            req.allow_unknown_abi,
        )
        if req.dry_run:
            checks = self.driver.check(request)
            return {"dry_run": True, "checks": [c.to_dict() for c in checks]}, ()
        record = self.driver.start(request)
        if req.wait:
            record = await self.driver.wait() or record
        return {"update": record.to_dict()}, ()

    async def _kexec(self, conn: Connection, req: codec.Kexec) -> Any:
        update = codec.Update(req.seq, req.kernel, req.initrd, req.cmdline, wait=True)
        return await self._update(conn, update, "KEXEC")

    async def _abort(self, conn: Connection, req: codec.Abort) -> Any:
        _root_only(conn, "ABORT")
        self.driver.abort(req.reason or f"abort requested by uid {conn.peer.uid}")
        record = await self.driver.wait()
        return {"update": record.to_dict() if record else None}, ()

    async def _watch(self, conn: Connection, req: codec.Watch) -> Any:
        if dialect.Capability.PROGRESS not in conn.capabilities:
            raise LuodError(
                "capability-missing",
                "WATCH needs the capability 'progress'",
                'send HELLO with "capabilities": ["progress"] first',
            )
        self.watchers.add(conn)
        record = self.driver.record
        return {
            "phase": str(self.driver.machine.phase),
            "update": record.to_dict() if record else None,
        }, ()

    async def _history(self, conn: Connection, req: codec.History) -> Any:
        return {"history": timeline.read_history(self.registry.state_dir)}, ()

    def notify(self, message: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(message)
        for conn in list(self.watchers):
            if conn.closed:
                self.watchers.discard(conn)
            else:
                conn.push(codec.encode(message))

    def _track(self, conn: Connection, vm_id: str) -> None:
        self.clients[vm_id] = conn
        conn.subscribed.add(vm_id)


def _root_only(conn: Connection, verb: str) -> None:
    if conn.peer.uid != 0:
        raise LuodError("not-allowed", f"{verb} needs root", "ask the host operator")


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
