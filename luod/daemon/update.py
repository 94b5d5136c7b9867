"""The update driver: performs prepare → freeze → kexec (and abort) step by step, asking the
pure state machine (luod.core.orchestrator) for every move. Its parts: the READY barrier
(luod.daemon.barrier), the kexec step (luod.daemon.kexec_step) and the record of the update
(luod.daemon.update_log); after the kexec it follows the reclaim until every VM is done."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from luod.core import dialect, handoff, holds, running, timeline
from luod.core.clock import Clock, Stamp
from luod.core.model import Mode, VmState
from luod.core.orchestrator import Phase, Transition, UpdateMachine
from luod.core.registry import Registry
from luod.daemon import nics
from luod.daemon.barrier import ReadyBarrier
from luod.daemon.connections import VmmConnections
from luod.daemon.events import EventBus
from luod.daemon.kexec_step import KexecSettings, KexecStep
from luod.daemon.update_log import UpdateLog
from luod.errors import LuodError
from luod.kernel import Backend, KernelGone, LuoError, OwnedFd, charged
from luod.net import uplink
from luod.values import Value
from luod.vmm import codec

if TYPE_CHECKING:
    from luod.core import compat, preflight

log = structlog.get_logger("luod.update")
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class _UpdateRequest(NamedTuple):
    kernel: Path
    initrd: Path | None = None
    cmdline: str | None = None  # None: reuse the running kernel's command line
    deadlines: Mapping[str, float] = MappingProxyType({})
    dry_run: bool = False
    requested_by: int = 0
    allow_unknown_abi: bool = False  # go ahead when luod cannot read an ABI (recorded)


class UpdateRequest(Value, _UpdateRequest):
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel": str(self.kernel),
            "initrd": str(self.initrd) if self.initrd else None,
            "cmdline": self.cmdline,
            "deadlines": dict(self.deadlines),  # the record's own (JSON: no mappingproxy)
            "uid": self.requested_by,
            "allow_unknown_abi": self.allow_unknown_abi,
        }


class UpdateDriver:
    def __init__(
        self,
        registry: Registry,
        backend: Backend,
        connections: VmmConnections,
        events: EventBus,
        clock: Clock,
        *,
        on_kexec: Callable[[], None],
        spawn: Spawn,
        kexec: KexecSettings | None = None,
        deadlines: Mapping[str, float] | None = None,
        unload_on_abort: bool = True,
        running_image: Path | None = None,
        managed_bridges: frozenset[str] = frozenset(),
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.connections = connections
        self.on_kexec = on_kexec
        self.spawn = spawn
        self.unload_on_abort = unload_on_abort
        self.running_image = running_image  # None: the platform's guess (/boot/vmlinuz-*)
        self.managed_bridges = managed_bridges
        self.log = UpdateLog(clock, events, registry.state_dir, registry.info.boot_id)
        self.clock = clock
        self._owed_resume: dict[str, str] = {}  # VM -> reason: a killed luod's abort (RESUME)
        self.machine = UpdateMachine(clock, emit=self._phase)
        self._base_deadlines = {
            **self.machine.deadlines,
            **{Phase(k): float(v) for k, v in (deadlines or {}).items()},
        }
        self.machine.deadlines = dict(self._base_deadlines)
        self.barrier = ReadyBarrier(registry, connections, self.machine, self.log)
        self.kexec = KexecStep(registry, backend, kexec or KexecSettings())
        self._task: asyncio.Task[None] | None = None
        self._loaded = False
        self._abort_reason = "abort requested"

    def _phase(self, transition: Transition) -> None:
        self.log.phase(transition, self.machine.deadlines.get(transition.target))

    @property
    def record(self) -> timeline.UpdateRecord | None:
        """The running update's record, or the last one's."""
        return self.log.record

    @property
    def defers_signals(self) -> bool:
        """SIGTERM waits while freezing/frozen/rebooting, except for systemd's own stop after
        systemctl kexec (the sessions are in the fd store by then)."""
        return self.machine.defers_signals and not self.kexec.handed_to_systemd

    # --- requests ------------------------------------------------------------------------------
    def read_images(self, kernel: Path) -> None:
        """Read (and decompress) the images a preflight compares into ``compat.CACHE``. Call
        it in a worker thread first: the checks on the loop then only stat them."""
        from luod.core import compat  # the handover-ABI readers: loaded by the first update

        for path in (kernel, self.running_image or self.backend.running_image()):
            if path is not None:
                compat.CACHE.facts(path)

    def check(self, request: UpdateRequest) -> list[preflight.Check]:
        """The preflight checks alone (an update in progress is one that fails)."""
        running = None if self.machine.phase is Phase.IDLE else str(self.machine.phase)
        return self._preflight(request, running)[0]

    def _preflight(
        self, request: UpdateRequest, running: str | None = None
    ) -> tuple[list[preflight.Check], compat.Assessment]:
        info = self.backend.info()
        cmdline = request.cmdline if request.cmdline is not None else info.cmdline
        vms = list(self.registry.vms.values())
        from luod.core import compat, preflight  # the ABI readers, the checks: the first update's

        assessment = compat.assess(
            self.backend,
            request.kernel,
            self.running_image,
            {f.kind for vm in vms for f in vm.files.values()},
            any(vm.mode is Mode.DELEGATION for vm in vms),
            request.allow_unknown_abi,
            timeline.read_history(self.registry.state_dir, kind="qualification"),
        )
        ctx = preflight.PreflightInput(
            info,
            vms,
            request.kernel,
            cmdline,
            frozenset(self.connections.connected()),
            preflight.mem_total(),
            preflight.fd_limit(),
            self.kexec.plan(),
            self.connections.granted(),
            assessment,
            running,
            *self._migrations(),
        )
        declared = nics.declared(self.registry)
        checks = preflight.run(ctx) + nics.preflight_checks(declared, self.managed_bridges)
        return checks, assessment

    def _migrations(self) -> tuple[tuple[str, ...], bool | None]:
        """The VMs a cgroup migration will reclaim after the kexec, and whether cgroup v2
        favors migrations: on the real kernel only (the simulator retrieves in place)."""
        if self.backend.name != "kernel":
            return (), None
        own = charged.cgroup_of(os.getpid())
        return tuple(self.connections.apart(own)), charged.migrations_favored()

    def start(self, request: UpdateRequest) -> timeline.UpdateRecord:
        """Preflight now (a refusal raises ``preflight.Refused`` with every check), then run
        the update in a task."""
        if self.machine.phase is not Phase.IDLE:
            raise LuodError(
                "update-running",
                f"an update is {self.machine.phase}",
                "watch it, or abort it first",
            )
        record = self.log.open({**request.to_dict(), "kexec_mode": self.kexec.plan().mode})
        self.machine.deadlines = {
            **self.machine.deadlines,
            **{Phase(k): v for k, v in request.deadlines.items()},
        }
        self.machine.go(Phase.PREPARING, f"requested by uid {request.requested_by}")
        checks, assessment = self._preflight(request)
        from luod.core import preflight

        record.request["handover_abi"] = assessment.to_record()
        if assessment.to_record()["override"]:
            log.warning("abi-unverified", override=True, reason=assessment.verdict.message)
        if preflight.failed(checks):
            refusal = preflight.Refused(checks)
            self.machine.go(Phase.ABORTING, refusal.message)
            self.machine.go(Phase.IDLE, "nothing was changed")
            self.log.finish("refused", refusal.message)
            raise refusal
        self._task = self.spawn(self._run(request))
        self._task.add_done_callback(self._task_done)
        return record

    def abort(self, reason: str, by: str = "") -> None:
        """``by``: who asked (recorded in the update: "uid N", or the REST token)."""
        if self._task is None or not self.machine.abortable:
            raise LuodError(
                "wrong-state",
                f"nothing to abort in phase {self.machine.phase}",
                "abort works before the kexec starts",
            )
        self._abort_reason = reason
        if self.log.record is not None:
            self.log.record.aborted_by = by
        self._task.cancel(reason)

    async def wait(self) -> timeline.UpdateRecord | None:
        """Until the running update ends (for callers that want the outcome)."""
        task = self._task
        if task is not None:
            await asyncio.wait([task])
        return self.log.record

    def refuse_new_vms(self) -> None:
        if self.machine.phase not in (Phase.IDLE, Phase.PREPARED, Phase.RECLAIMING):
            raise LuodError(
                "update-running",
                f"an update is {self.machine.phase}",
                "register new VMs after it (or abort it)",
            )

    def ready(self, vm_id: str, error: str | None) -> str | None:
        """A VMM's READY (see ReadyBarrier.ready)."""
        return self.barrier.ready(vm_id, error)

    def vmm_gone(self, vm_id: str) -> None:
        """A VMM disconnected: if luod was waiting for its READY, that is a refusal."""
        self.barrier.ready(vm_id, "its VMM disconnected before answering READY")

    def shutdown(self) -> None:
        """luod is stopping: an update before the freeze is aborted (VMs resume); after
        systemctl kexec the update just stops waiting (systemd carries it on)."""
        if self._task is not None and self.kexec.handed_to_systemd:
            self._task.cancel("luod is stopped for systemctl kexec")
        elif self._task is not None and self.machine.abortable:
            self._abort_reason = "luod is stopping"
            self._task.cancel(self._abort_reason)

    # --- the update ----------------------------------------------------------------------------
    async def _run(self, request: UpdateRequest) -> None:
        """One update, top to bottom. An abort or a failure before the kexec resumes every VM
        with its sessions still preserved."""
        try:
            self.log.uplink(await asyncio.to_thread(uplink.default_uplink))
            handoff.load_next_kernel(self.backend, request.kernel, request.initrd, request.cmdline)
            self._loaded = True
            await holds.hold("preparing")
            await nics.record(self.registry, self.managed_bridges)
            await self.barrier.cross(
                self._delegated(), "START_PRESERVATION", Phase.PREPARING, self._session_fd
            )
            self.machine.go(Phase.PREPARED, "every VM preserved")
            await holds.hold("prepared")
            handoff.require_loaded(self.backend)  # here, not inside the VMs' pause
            self._stage_handoff()
            # the handoff's snapshot and the host's dirty pages flushed before the freeze: the
            # sync before reboot() then has little left, inside the VMs' pause (issue 17)
            await asyncio.to_thread(os.sync)
            self.machine.go(Phase.FREEZING, "operator or automatic freeze")
            await self.barrier.cross(list(self.registry.vms), "FREEZE", Phase.FREEZING)
            self.machine.go(Phase.FROZEN, "every VM answered READY")
            await holds.hold("frozen")
            await self._kexec()
        except asyncio.CancelledError:
            await self._abort_in_time(self._abort_reason)
        except LuodError as exc:
            if self.machine.abortable:
                await self._abort_in_time(f"{exc.code}: {exc.message}")
            else:
                self.log.finish("failed", f"{exc.code}: {exc.message}")
        finally:
            self._task = None

    def _stage_handoff(self) -> None:
        """Before the freeze: the manifest's snapshot, with the record so far, written where
        the next kernel's luod looks (Registry.stage_kexec); after the last READY only the
        changes since are added (Registry.begin_kexec, in the kexec step)."""
        value, text = self.log.stage()
        self.registry.carry("update", value, text)
        self.registry.stage_kexec()

    async def _kexec(self) -> None:
        plan = self.kexec.plan()
        frozen_until = self.machine.deadline()  # the `frozen` deadline bounds the VMs' pause
        self.machine.go(Phase.REBOOTING, f"kexec ({plan.mode})")
        lines = self.log.since_staged()
        if lines is not None:  # the record as staged, and what changed since (UpdateLog.stage)
            self.registry.carry_update_lines(lines)
        else:  # written whole since: carried whole, encoded now
            assert self.log.record is not None
            self.registry.carry("update", self.log.record.to_dict())
        try:
            await self.kexec.run(plan, lambda: self._frozen_in_time(frozen_until))
        except KernelGone:  # luod outlived the kexec (the simulator): it stops as if rebooted
            self.on_kexec()
        except LuodError as exc:
            self.machine.go(Phase.PREPARED, f"reboot failed: {exc.message}")
            if exc.code == "deadline":
                await self._abort_in_time(f"deadline: {exc.message}")
            else:
                await self._abort_in_time(
                    f"reboot failed ({exc.code}): the kernel rolled the freeze back",
                    outcome="failed",
                )

    def _frozen_in_time(self, until: float | None) -> None:
        """Just before the reboot syscall (after the sync): past the `frozen` deadline the
        kexec is called off and every VM resumes (the handover is rolled back first)."""
        if until is not None and (late := self.clock.now().monotonic - until) > 0:
            raise LuodError(
                "deadline",
                f"frozen {late:.1f} s past the frozen deadline before the reboot",
                "the sync before the kexec was slow: raise `deadlines.frozen`, or sync first",
            )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never ran its own abort: do it here."""
        if task.cancelled() and self.machine.abortable:
            self._abort(self._abort_reason)
        if self._task is task:
            self._task = None

    def _abort(self, reason: str, outcome: str = "aborted") -> None:
        """The abort where nothing can wait (a task cancelled before its first step)."""
        self._enter_abort(reason)
        if self._loaded and self.unload_on_abort:
            self._unload()
        self._end_abort(reason, outcome)

    async def _abort_in_time(self, reason: str, outcome: str = "aborted") -> None:
        """The abort, its kernel unload bounded by the `aborting` deadline: past it luod goes
        back to idle anyway (the VMMs got RESUME first) and the outcome says so."""
        self._enter_abort(reason)
        if self._loaded and self.unload_on_abort:
            limit = self.machine.remaining()
            unload = asyncio.ensure_future(asyncio.to_thread(self._unload))
            with contextlib.suppress(asyncio.CancelledError):  # a second abort: end this one
                done, _ = await asyncio.wait([unload], timeout=limit)
                if not done:
                    log.error("unload-overdue", seconds=limit, hint="see /sys/kernel/kexec_loaded")
                    reason += (
                        f" (the kernel unload did not end within the aborting deadline, "
                        f"{limit:g} s: the next kernel may still be loaded)"
                    )
        self._end_abort(reason, outcome)

    def _enter_abort(self, reason: str) -> None:
        self.machine.go(Phase.ABORTING, reason)
        for vm_id, conn in self.connections:
            if dialect.may_send("RESUME", conn.capabilities):
                conn.push(codec.encode(codec.event("RESUME", id=vm_id, reason=reason)))
        try:
            self.registry.end_kexec()  # the handoff staged before the freeze, if it was
        except (LuodError, LuoError, OSError) as exc:  # the VMs resume all the same
            log.error("handoff-not-withdrawn", error=str(exc))
        if self.log.running():
            self.log.resumed(list(self.registry.vms))

    def _unload(self) -> None:
        try:
            self.backend.unload_kernel()
        except LuoError as exc:
            log.warning("unload-failed", error=str(exc))

    def _end_abort(self, reason: str, outcome: str) -> None:
        self._loaded = False
        self.machine.go(Phase.IDLE, "aborted: every VM resumed, sessions still preserved")
        self.log.finish(outcome, reason)

    def _delegated(self) -> list[str]:
        return [v.id for v in self.registry.vms.values() if v.mode is Mode.DELEGATION]

    def _session_fd(self, vm_id: str) -> tuple[OwnedFd, ...]:
        return (self.registry.delegate_fd(self.registry.get(vm_id)),)

    # --- after the kexec -----------------------------------------------------------------------
    def resume_after_kexec(self, started: Stamp) -> None:
        """Recovery took the sessions back: continue the carried record in RECLAIMING."""
        previous = self.registry.previous
        data = previous.extra.get("update") if previous else None
        if data:
            self._reclaim_from(data, started)

    def _reclaim_from(self, data: dict[str, Any], started: Stamp) -> None:
        self._reclaiming(self.log.reopen(data, started), "luod started after the kexec")
        self._maybe_complete()

    def _reclaiming(self, record: timeline.UpdateRecord, reason: str) -> None:
        asked = record.request.get("deadlines", {})
        self.machine.deadlines = {
            **self._base_deadlines,
            **{Phase(k): v for k, v in asked.items() if k == "reclaiming"},
        }
        self.machine.go(Phase.RECLAIMING, reason)

    def vm_step(self, vm_id: str, step: str) -> None:
        if self.log.record is None or self.machine.phase is not Phase.RECLAIMING:
            return
        self.log.reclaim_step(vm_id, step)
        self._maybe_complete()

    def reclaim_deadline_passed(self) -> None:
        if self.machine.phase is Phase.RECLAIMING:
            left = sorted(self._unfinished())
            log.warning("vms-unreclaimed", vms=left, note="sessions kept; never finished silently")
            self.machine.go(Phase.IDLE, f"grace period over; unreclaimed: {', '.join(left)}")
            self.log.finish("completed-with-unreclaimed", f"unreclaimed: {', '.join(left)}")

    def _maybe_complete(self) -> None:
        if self.machine.phase is Phase.RECLAIMING and not self._any_unfinished():
            self.machine.go(Phase.IDLE, "every VM reclaimed and done")
            self.log.finish("completed", "")

    def _any_unfinished(self) -> bool:
        """Stops at the first (after every DONE: O(VMs) at most, not a list of them)."""
        came = (VmState.INCOMING, VmState.RECLAIMED)
        return any(v.state in came for v in self.registry.vms.values())

    def _unfinished(self) -> list[str]:
        """VMs that came through the update and are not done (new registrations don't count)."""
        came = (VmState.INCOMING, VmState.RECLAIMED)
        return [v.id for v in self.registry.vms.values() if v.state in came]

    # --- after a luod that was killed in the middle of an update (luod.core.running) ---------
    def resume_interrupted(self, after_kexec: bool, started: Stamp) -> bool:
        """End or continue the update a killed luod left running. True when it goes on in
        RECLAIMING (the caller then runs the grace period)."""
        found = running.read(self.registry.state_dir, self.registry.info.boot_id)
        if found is None or after_kexec:  # after the kexec the manifest carries the record
            running.clear(self.registry.state_dir)
            return False
        if found.phase is Phase.REBOOTING and not found.same_boot and self._any_unfinished():
            self._reclaim_from(found.record.to_dict(), started)  # killed before it got here
            return self.machine.phase is Phase.RECLAIMING
        self.log.adopt(found.record)
        if found.phase is Phase.RECLAIMING and found.same_boot:
            self._reclaiming(found.record, "luod restarted during reclaiming")
            self.machine.entered = found.entered() or self.machine.entered  # the grace goes on
        elif found.phase is Phase.IDLE:  # killed while it wrote the end
            last = found.record.phases[-1]
            done = "completed" if last["from"] == Phase.RECLAIMING else "aborted"
            self.log.finish(done, str(last.get("reason", "")))
        elif found.same_boot:
            self._abort_interrupted(found.phase)
        else:
            reason = f"the machine booted without the live update while luod was {found.phase}"
            self.log.finish("failed", reason)
        self._maybe_complete()
        return self.machine.phase is Phase.RECLAIMING

    def _abort_interrupted(self, phase: Phase) -> None:
        """Before the reboot: the update ends aborted; every VMM that registers again gets
        RESUME (it may have paused for FREEZE); a kernel the killed luod loaded is unloaded."""
        reason = f"luod restarted during {phase}: every VM resumed, sessions still preserved"
        now = self.clock.now()
        if phase is not Phase.ABORTING:
            self.log.phase(Transition(phase, Phase.ABORTING, reason, now))
        self.log.phase(Transition(Phase.ABORTING, Phase.IDLE, reason, now))
        self._owed_resume = dict.fromkeys(self.registry.vms, reason)
        if self.unload_on_abort and self.backend.kernel_loaded():
            self._unload()
        self.log.finish("aborted", reason)

    def vmm_back(self, vm_id: str) -> None:
        """A VMM registered again: the RESUME a killed luod owed it, if any."""
        reason = self._owed_resume.pop(vm_id, None)
        conn = self.connections.of(vm_id)
        if reason and conn is not None and dialect.may_send("RESUME", conn.capabilities):
            conn.push(codec.encode(codec.event("RESUME", id=vm_id, reason=reason)))
