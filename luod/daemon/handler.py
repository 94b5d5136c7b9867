"""Maps each VMM socket request onto the core (registry, reclaim) and the update driver, by a
table from request type to the coroutine that answers it. No logic of its own beyond who may
do what at the transport level; kernel work runs off the event loop."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

import luod
from luod.core import dialect, reclaim, timeline
from luod.core.model import Mode, VmRecord
from luod.core.registry import Registry
from luod.daemon import heap
from luod.daemon.connections import VmmConnection, VmmConnections
from luod.daemon.events import EventBus
from luod.daemon.nics import Rebuilds, warm_up
from luod.daemon.update import UpdateDriver, UpdateRequest
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import codec, fields, paging

log = structlog.get_logger("luod.handler")
INLINE_BYTES = 128 << 20
"""Below this a preserve, a reclaim or a DONE costs at most tens of ms of kernel time: done on
the loop, since the thread hop costs more than it saves (100 VMMs reclaiming at once queued
behind each other's hops, bench/blackout_budget.py). Above it (GiBs of guest RAM take seconds,
docs/kernel.md §6.2, §6.4) it runs in a worker thread so other clients keep being served."""

RESERVED_HINT = "choose another id: luod names its own VMs (a qualification's QEMU canary: luodq-*)"

Reply = tuple[dict[str, Any], tuple[OwnedFd, ...]]
R = TypeVar("R", bound=codec.Request)
Verb = Callable[[VmmConnection, R], Awaitable[Reply]]


class Verbs:
    """The table from request type to the coroutine that answers it: each entry is checked
    (mypy) to take the request type it is filed under."""

    def __init__(self) -> None:
        self._table: dict[type[codec.Request], Verb[Any]] = {}

    def add(self, kind: type[R], verb: Verb[R]) -> None:
        self._table[kind] = verb

    def of(self, request: codec.Request) -> Verb[Any]:
        return self._table[type(request)]

    def kinds(self) -> frozenset[type[codec.Request]]:
        return frozenset(self._table)


class LuodHandler:
    deferred: Final = frozenset({codec.Done})
    """Served in a lull (luod.vmm.lull): a DONE after the RECLAIMs that came with it."""

    def __init__(
        self,
        registry: Registry,
        driver: UpdateDriver,
        connections: VmmConnections,
        events: EventBus,
        nics: Rebuilds | None = None,
        reserved: Callable[[str], str] = lambda _: "",
    ) -> None:
        self.registry = registry
        self.reserved = reserved  # why a VM id is not a VMM's to take ("": it is)
        self.nics = nics or Rebuilds(registry, frozenset())
        self.driver = driver
        self.connections = connections
        self.events = events
        self.lock = asyncio.Lock()  # one registry operation at a time
        self.verbs = self._verbs()

    def _verbs(self) -> Verbs:
        verbs = Verbs()
        verbs.add(codec.Hello, self._hello)
        verbs.add(codec.Register, self._register)
        verbs.add(codec.Nics, self._declare_nics)
        verbs.add(codec.Preserve, self._preserve)
        verbs.add(codec.ListVms, self._list)
        verbs.add(codec.Drop, self._drop)
        verbs.add(codec.Reclaim, self._reclaim)
        verbs.add(codec.Done, self._done)
        verbs.add(codec.Subscribe, self._subscribe)
        verbs.add(codec.Ready, self._ready)
        verbs.add(codec.Claim, self._claim)
        verbs.add(codec.Status, self._status)
        verbs.add(codec.Update, self._update)
        verbs.add(codec.Kexec, self._kexec)
        verbs.add(codec.Abort, self._abort)
        verbs.add(codec.Watch, self._watch)
        verbs.add(codec.History, self._history)
        return verbs

    async def handle(self, conn: VmmConnection, request: codec.Request) -> codec.Outgoing:
        if not isinstance(request, codec.Hello):
            self.registry.admit(conn.peer)
        body, fds = await self.verbs.of(request)(conn, request)
        try:
            return codec.encode(codec.ok_reply(request.cmd, request.seq, body), fds)
        except BaseException:  # reply-too-large: the fds it would have carried are ours
            for fd in fds:
                fd.close()
            raise

    def disconnected(self, conn: VmmConnection) -> None:
        self.events.unwatch(conn)
        for vm_id in self.connections.gone(conn):
            log.info("vmm-gone", vm=vm_id, note="luod keeps the session")
            self.driver.vmm_gone(vm_id)
        heap.give_back()

    async def _run(self, call: Callable[..., Any], *args: Any, inline: bool = False) -> Any:
        """Run a core call under the registry lock; off the loop unless it is known small
        (preserve and retrieve are linear in size, docs/kernel.md §6.2)."""
        async with self.lock:
            if inline:
                return call(*args)
            return await asyncio.to_thread(call, *args)

    def _small(self, vm_id: str, size: Callable[[VmRecord], int]) -> bool:
        """Whether the kernel work on ``vm_id`` is small enough to run on the loop (an unknown
        VM: yes, the call refuses it at once)."""
        vm = self.registry.vms.get(vm_id)
        return vm is None or size(vm) < INLINE_BYTES

    # --- verbs ------------------------------------------------------------------------------
    async def _hello(self, conn: VmmConnection, req: codec.Hello) -> Reply:
        conn.capabilities = dialect.grant(req.capabilities)
        info = {
            "protocol": codec.PROTOCOL,
            "version": codec.VERSION,
            "server": f"luod {luod.__version__}",
            "capabilities": sorted(conn.capabilities),
            "supported": sorted(dialect.ALL),
        }
        return info, ()

    async def _register(self, conn: VmmConnection, req: codec.Register) -> Reply:
        self._refuse_reserved(req.id)
        if req.id not in self.registry.vms:
            self.driver.refuse_new_vms()
        vm = await self._run(self.registry.register, conn.peer, req.id, Mode.HANDOVER, inline=True)
        self.connections.track(req.id, conn)
        self.driver.vmm_back(req.id)
        if req.nics is not None:
            return await self._declare_nics(conn, codec.Nics(req.seq, req.id, req.nics))
        return {"vm": _vm(vm)}, ()

    def _refuse_reserved(self, vm_id: str) -> None:
        if why := self.reserved(vm_id):
            raise LuodError("reserved-id", f"VM id {vm_id!r} is reserved: {why}", RESERVED_HINT)

    async def _declare_nics(self, conn: VmmConnection, req: codec.Nics) -> Reply:
        vm = await self._run(self.registry.declare_nics, conn.peer, req.id, req.nics, inline=True)
        if req.nics:
            warm_up()
        return {"vm": _vm(vm)}, ()

    async def _preserve(self, conn: VmmConnection, req: codec.Preserve) -> Reply:
        small = sum(os.fstat(fd.fileno()).st_size for fd in req.fds) < INLINE_BYTES
        files = await self._run(
            self.registry.preserve, conn.peer, req.id, req.files, req.fds, inline=small
        )
        self.connections.track(req.id, conn)
        return {"files": [_file(f) for f in files]}, ()

    async def _list(self, conn: VmmConnection, req: codec.ListVms) -> Reply:
        vms = sorted(self.registry.listing(conn.peer, req.id), key=lambda v: v.id)
        after = [_vm(v) for v in vms if req.after is None or v.id > req.after]
        page, following = paging.page(after, req.limit, lambda vm: str(vm["id"]))
        return {"vms": page, "next": following}, ()

    async def _drop(self, conn: VmmConnection, req: codec.Drop) -> Reply:
        await self._run(self.registry.drop, conn.peer, req.id)
        self.connections.forget(req.id)
        return {}, ()

    async def _reclaim(self, conn: VmmConnection, req: codec.Reclaim) -> Reply:
        if req.names is None:
            _fits_one_reply(self.registry.get(req.id, conn.peer))
        nics = await self.nics.ready(req.id)  # rebuilt before RECLAIM answers (bounded wait)
        small = self._small(req.id, lambda vm: reclaim.retrieve_bytes(vm, req.names))
        pairs = await self._run(
            reclaim.reclaim, self.registry, conn.peer, req.id, req.names, inline=small
        )
        self.connections.track(req.id, conn)
        self.driver.vm_step(req.id, "reclaimed")
        files = {"files": [_file(f) for f, _ in pairs]}
        return files | ({} if nics is None else {"nics": nics}), tuple(fd for _, fd in pairs)

    async def _done(self, conn: VmmConnection, req: codec.Done) -> Reply:
        small = self._small(req.id, reclaim.finish_bytes)
        await self._run(reclaim.done, self.registry, conn.peer, req.id, req.force, inline=small)
        self.connections.forget(req.id)
        self.driver.vm_step(req.id, "done")
        return {}, ()

    async def _subscribe(self, conn: VmmConnection, req: codec.Subscribe) -> Reply:
        self._refuse_reserved(req.id)
        if req.id not in self.registry.vms:
            self.driver.refuse_new_vms()
        vm = await self._run(self.registry.register, conn.peer, req.id, Mode.DELEGATION)
        self.connections.track(req.id, conn)
        self.driver.vmm_back(req.id)
        return {"vm": _vm(vm)}, ()

    async def _ready(self, conn: VmmConnection, req: codec.Ready) -> Reply:
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

    async def _claim(self, conn: VmmConnection, req: codec.Claim) -> Reply:
        nics = await self.nics.ready(req.id)  # as RECLAIM: its NICs rebuilt first
        fd = await self._run(reclaim.claim, self.registry, conn.peer, req.id)
        self.driver.vm_step(req.id, "reclaimed")
        if dialect.claim_ends_custody(conn.capabilities):  # luo-agent: no DONE will come
            try:
                await self._run(reclaim.done, self.registry, conn.peer, req.id, False)
            except BaseException:
                fd.close()
                raise
            self.connections.forget(req.id)
            self.driver.vm_step(req.id, "done")
        return ({} if nics is None else {"nics": nics}), (fd,)

    async def _status(self, conn: VmmConnection, req: codec.Status) -> Reply:
        info = self.registry.info
        return {
            "phase": str(self.driver.machine.phase),
            "vms": len(self.registry.vms),
            "kernel": info.release,
            "liveupdate_number": info.liveupdate_number,
            "backend": self.registry.backend_name,
            "custody": self.registry.custody_health._asdict(),
        }, ()

    async def _update(self, conn: VmmConnection, req: codec.Update) -> Reply:
        return await self._start_update(conn, req, "UPDATE")

    async def _kexec(self, conn: VmmConnection, req: codec.Kexec) -> Reply:
        update = codec.Update(req.seq, req.kernel, req.initrd, req.cmdline, wait=True)
        return await self._start_update(conn, update, "KEXEC")

    async def _start_update(self, conn: VmmConnection, req: codec.Update, verb: str) -> Reply:
        _root_only(conn, verb)
        await asyncio.to_thread(self.driver.read_images, Path(req.kernel))
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

    async def _abort(self, conn: VmmConnection, req: codec.Abort) -> Reply:
        _root_only(conn, "ABORT")
        by = f"uid {conn.peer.uid}"
        self.driver.abort(req.reason or f"abort requested by {by}", by)
        record = await self.driver.wait()
        return {"update": record.to_dict() if record else None}, ()

    async def _watch(self, conn: VmmConnection, req: codec.Watch) -> Reply:
        if dialect.Capability.PROGRESS not in conn.capabilities:
            raise LuodError(
                "capability-missing",
                "WATCH needs the capability 'progress'",
                'send HELLO with "capabilities": ["progress"] first',
            )
        self.registry.require_operator(conn.peer, "WATCH")
        self.events.watch(conn)
        record = self.driver.record
        return {
            "phase": str(self.driver.machine.phase),
            "update": record.to_dict() if record else None,
        }, ()

    async def _history(self, conn: VmmConnection, req: codec.History) -> Reply:
        self.registry.require_operator(conn.peer, "HISTORY")
        with timeline.history(self.registry.state_dir, kind="update") as lines:  # not over REST
            if req.after is not None:
                lines = lines[_after(lines, req.after) :]
            taken = _enough(lines, req.limit)
        page, following = paging.page(taken, req.limit, lambda r: str(r.get("id")))
        return {"history": page, "next": following}, ()


def _after(lines: timeline.HistoryLines, after: str) -> int:
    """Where the records after update ``after`` start (only the lines that may be it are
    copied out and parsed)."""
    mark = json.dumps(after).encode()
    for index in range(len(lines)):
        if (
            lines.holds(index, mark)
            and (record := timeline.parse_line(lines[index]))
            and str(record.get("id")) == after
        ):
            return index + 1
    raise LuodError(
        "bad-request",
        f"no update {fields.shown(after)} in the history",
        "start again without 'after' (old records are dropped, docs/limits.md)",
    )


def _enough(lines: Iterable[bytes], limit: int | None) -> list[dict[str, Any]]:
    """The update records one page can hold, and one more (so that the page knows there are
    more), parsed; the lines after them are not."""
    taken: list[dict[str, Any]] = []
    size = 0
    for line in lines:
        if len(taken) > (limit or fields.MAX_PAGE) or size > paging.PAGE_BYTES:
            break
        record = timeline.parse_line(line)
        if record is not None and record.get("kind", "update") == "update":
            taken.append(record)
            size += len(json.dumps(record, separators=(",", ":"))) + 1  # as paging.page counts
    return taken


def _root_only(conn: VmmConnection, verb: str) -> None:
    if conn.peer.uid != 0:
        raise LuodError("not-allowed", f"{verb} needs root", "ask the host operator")


def _fits_one_reply(vm: VmRecord) -> None:
    """A reply carries at most MAX_FDS fds: a RECLAIM of every file of a bigger VM is refused
    before anything is retrieved (the client names its files in batches)."""
    if len(vm.files) > codec.MAX_FDS:
        raise LuodError(
            "too-many-fds",
            f"VM {vm.id!r} has {len(vm.files)} files; a reply carries at most {codec.MAX_FDS} fds",
            f"RECLAIM at most {codec.MAX_FDS} files at a time, named in 'files' (LIST shows "
            "them); luod.vmm.client does this itself",
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
        "nics": [nic.to_dict() for nic in vm.nics],
    }


def _file(record: Any) -> dict[str, Any]:
    return {
        "name": record.name,
        "token": record.token,
        "kind": record.kind,
        "size": record.size,
        "reclaimed": record.reclaimed,
    }
