"""VM network devices across the kexec, wired into the daemon (issue 15; luod.net does the
netlink work): recorded at prepare into the manifest, rebuilt after the reboot before each VM's
RECLAIM answers, checked by the preflight.

pyroute2 is imported (by luod.net.plumbing) only inside these functions, and only when some VM
declared NICs: luod's start and the first RECLAIM of VMs without NICs never pay for it. Netlink
work runs in a worker thread (pyroute2's synchronous API refuses a thread with an event loop);
the registry is changed on the loop only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

import structlog

from luod.core.model import VmState, unreadable_net
from luod.core.registry import Registry

if TYPE_CHECKING:  # an update's preflight and VMs with NICs import them, not luod's start
    from luod.core import preflight
    from luod.core.nic import NetRecord, NicDecl

log = structlog.get_logger("luod.nics")
WAIT: Final = 60.0
"""How long a RECLAIM waits for its VM's NICs before it answers without them ("pending"): the
memory is never held back longer because of the network."""
Step = Callable[[str, str], None]


_warm: list[threading.Thread] = []


def warm_up() -> None:
    """Once a VM declares NICs, import pyroute2 (luod.net.plumbing) in a background thread:
    it takes seconds in a TCG guest, which neither an update's preflight nor its prepare
    should wait for. Only the first call does anything."""
    if not _warm:
        thread = threading.Thread(target=_import_net, name="luod-net-import", daemon=True)
        _warm.append(thread)
        thread.start()


def _import_net() -> None:
    try:
        import luod.net.plumbing  # noqa: F401
    except Exception as exc:  # reported again, with its cause, when luod uses it
        log.warning("net-import-failed", error=str(exc))


def declared(registry: Registry) -> dict[str, tuple[NicDecl, ...]]:
    return {vm.id: vm.nics for vm in registry.vms.values() if vm.nics}


def record_all(
    nics: Mapping[str, Sequence[NicDecl]], managed: Collection[str]
) -> dict[str, NetRecord | str]:
    """At prepare (worker thread): each VM's devices as they are now, or why they cannot be
    read (that VM's NICs then come back "unreadable" after the kexec; the update goes on)."""
    from luod.net.plumbing import Plumbing
    from luod.net.rebuild import explain

    records: dict[str, NetRecord | str] = {}
    try:
        net = Plumbing(managed)
    except Exception as exc:
        return dict.fromkeys(nics, f"rtnetlink unavailable at prepare: {explain(exc)}")
    with net:
        for vm_id, decls in nics.items():
            try:
                records[vm_id] = net.record(decls)
            except Exception as exc:
                records[vm_id] = f"not recorded at prepare: {explain(exc)}"
    return records


async def record(registry: Registry, managed: Collection[str]) -> None:
    """Record every declared VM's devices into the registry (and so into the manifest)."""
    nics = declared(registry)
    for vm in registry.vms.values():
        if vm.net is not None and not vm.nics:
            registry.set_net(vm.id, None)  # withdrew its declaration since the last prepare
    if not nics:
        return
    records = await asyncio.to_thread(record_all, nics, managed)
    for vm_id, found in records.items():
        if vm_id not in registry.vms:
            continue  # dropped meanwhile
        if isinstance(found, str):
            log.warning("nics-not-recorded", vm=vm_id, error=found)
            registry.set_net(vm_id, None)
            registry.set_net_report(vm_id, unreadable_net(found))
        else:
            registry.set_net(vm_id, found)
            log.info("nics-recorded", vm=vm_id, nics=[n.name for n in found.nics])


def preflight_checks(
    nics: Mapping[str, Sequence[NicDecl]], managed: Collection[str]
) -> list[preflight.Check]:
    """Warnings (never refusals) naming the VM and the device luod cannot rebuild exactly.
    Called on the event loop (the update's start): the netlink work runs in a thread of its
    own, joined (a few ms per device, once pyroute2 is imported)."""
    if not nics:
        return []
    from luod.core import preflight
    from luod.net.plumbing import preflight as nic_preflight
    from luod.net.rebuild import explain

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="luod-nics") as pool:
            found = pool.submit(nic_preflight, nics, managed).result()
    except Exception as exc:
        return [
            preflight.Check(
                "nics", preflight.Status.WARN, f"cannot read the VMs' NICs: {explain(exc)}"
            )
        ]
    if not found:
        count = sum(len(decls) for decls in nics.values())
        return [
            preflight.Check("nics", preflight.Status.PASS, f"{count} declared NICs can be rebuilt")
        ]
    return [
        preflight.Check("nics", preflight.Status.WARN, f"{w.message} ({w.code})", w.hint)
        for w in found
    ]


class Rebuilds:
    """After the kexec: every VM that came through it with recorded NICs gets them rebuilt,
    VM by VM in one worker thread, started as early as luod can; RECLAIM of a VM waits for its
    own (``ready``), VMs without NICs for nothing. ``step(vm, "nics_rebuilt")`` stamps each VM's
    part of the blackout in the update's record."""

    def __init__(self, registry: Registry, managed: Collection[str], wait: float = WAIT) -> None:
        self.registry = registry
        self.managed = frozenset(managed)
        self.wait = wait
        self._done: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    def pending(self) -> dict[str, NetRecord]:
        """VMs back from the kexec whose recorded devices were not rebuilt yet (a luod that
        restarts without a kexec finds none: their devices are left alone)."""
        return {
            vm.id: vm.net
            for vm in self.registry.vms.values()
            if vm.state is VmState.INCOMING and vm.net is not None and vm.net_report is None
        }

    def start(self, step: Step) -> None:
        todo = self.pending()
        if not todo:
            return
        self._done = {vm_id: asyncio.Event() for vm_id in todo}
        self._task = asyncio.get_running_loop().create_task(self._run(todo, step))

    async def settled(self, timeout: float) -> None:
        """Until every VM's rebuild is done, at most ``timeout`` seconds (at once when there
        is none). Never raises: a rebuild that died has reported its VMs (see ``_run``)."""
        if self._task is not None:
            await asyncio.wait([self._task], timeout=timeout)

    async def ready(self, vm_id: str) -> dict[str, Any] | None:
        """The VM's NIC state for its RECLAIM reply: None without NICs; ``pending`` when the
        rebuild is not done within ``wait`` seconds."""
        done = self._done.get(vm_id)
        if done is not None and not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), self.wait)
            except TimeoutError:
                return {"ready": False, "exact": False, "pending": True, "devices": []}
        vm = self.registry.vms.get(vm_id)
        if vm is None or (vm.net is None and vm.net_report is None):
            return None
        return summary(vm.net_report)

    async def _run(self, todo: dict[str, NetRecord], step: Step) -> None:
        loop = asyncio.get_running_loop()

        def finished(vm_id: str, report: dict[str, Any]) -> None:
            if vm_id in self.registry.vms:
                self.registry.set_net_report(vm_id, report)
                step(vm_id, "nics_rebuilt")
            self._done[vm_id].set()
            log.info("nics-rebuilt", vm=vm_id, ready=report["ready"], exact=report["exact"])

        def post(vm_id: str, report: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(finished, vm_id, report)

        try:
            await asyncio.to_thread(rebuild_all, todo, self.managed, post)
        finally:
            for vm_id, event in self._done.items():
                if not event.is_set():  # the thread died: say so, never wait forever
                    finished(vm_id, unreadable_net("the rebuild stopped before this VM"))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


def rebuild_all(
    todo: Mapping[str, NetRecord],
    managed: Collection[str],
    post: Callable[[str, dict[str, Any]], None],
) -> None:
    """Worker thread: one rtnetlink socket, each VM rebuilt and posted as soon as it is done."""
    from luod.net.plumbing import Plumbing
    from luod.net.rebuild import explain

    try:
        net = Plumbing(managed)
    except Exception as exc:
        for vm_id in todo:
            post(vm_id, unreadable_net(f"rtnetlink unavailable: {explain(exc)}"))
        return
    with net:
        for vm_id, record in todo.items():
            try:
                report = net.rebuild(record).to_dict()
            except Exception as exc:  # rebuild reports per device; this is a bug's net
                report = unreadable_net(f"rebuild failed: {explain(exc)}")
            post(vm_id, report | {"problems": _problems(report)})


def _problems(report: dict[str, Any]) -> list[str]:
    return [
        f"{d['role']} {d['name']}: {d['status']}" + (f" ({d['reason']})" if d["reason"] else "")
        for d in report.get("devices", [])
        if d["status"] not in ("kept", "rebuilt")
    ]


def summary(report: dict[str, Any] | None) -> dict[str, Any]:
    """What a VMM and an operator are told: ready, exact, the problems, every device."""
    if report is None:
        return {"ready": False, "exact": False, "pending": True, "devices": []}
    problems = list(report.get("problems", []))
    if report.get("error"):
        problems.insert(0, str(report["error"]))
    return {
        "ready": bool(report.get("ready")),
        "exact": bool(report.get("exact")),
        "seconds": report.get("seconds", 0.0),
        "problems": problems,
        "devices": list(report.get("devices", [])),
    }
