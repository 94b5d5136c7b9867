"""The update driver: performs prepare → freeze → kexec (and abort) step by step, asking the
pure state machine (luod.core.orchestrator) for every move. Its parts: the READY barrier
(luod.daemon.barrier), the kexec step (luod.daemon.kexec_step) and the record of the update
(luod.daemon.update_log); after the kexec it follows the reclaim until every VM is done."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from luod.core import compat, dialect, handoff, preflight, timeline
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
from luod.kernel import Backend, KernelGone, LuoError, OwnedFd
from luod.net import uplink
from luod.vmm import codec

log = structlog.get_logger("luod.update")
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


@dataclass(frozen=True)
class UpdateRequest:
    kernel: Path
    initrd: Path | None = None
    cmdline: str | None = None  # None: reuse the running kernel's command line
    deadlines: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False
    requested_by: int = 0
    allow_unknown_abi: bool = False  # go ahead when luod cannot read an ABI (recorded)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel": str(self.kernel),
            "initrd": str(self.initrd) if self.initrd else None,
            "cmdline": self.cmdline,
            "deadlines": self.deadlines,
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
        self.log = UpdateLog(clock, events, registry.state_dir)
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
        assessment = compat.assess(
            self.backend,
            request.kernel,
            self.running_image,
            {f.kind for vm in vms for f in vm.files.values()},
            any(vm.mode is Mode.DELEGATION for vm in vms),
            request.allow_unknown_abi,
            timeline.read_history(self.registry.state_dir),
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
        )
        declared = nics.declared(self.registry)
        checks = preflight.run(ctx) + nics.preflight_checks(declared, self.managed_bridges)
        return checks, assessment

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
            await nics.record(self.registry, self.managed_bridges)
            await self.barrier.cross(
                self._delegated(), "START_PRESERVATION", Phase.PREPARING, self._session_fd
            )
            self.machine.go(Phase.PREPARED, "every VM preserved")
            self.machine.go(Phase.FREEZING, "operator or automatic freeze")
            await self.barrier.cross(list(self.registry.vms), "FREEZE", Phase.FREEZING)
            self.machine.go(Phase.FROZEN, "every VM answered READY")
            await self._kexec()
        except asyncio.CancelledError:
            self._abort(self._abort_reason)
        except LuodError as exc:
            if self.machine.abortable:
                self._abort(f"{exc.code}: {exc.message}")
            else:
                self.log.finish("failed", f"{exc.code}: {exc.message}")
        finally:
            self._task = None

    async def _kexec(self) -> None:
        plan = self.kexec.plan()
        self.machine.go(Phase.REBOOTING, f"kexec ({plan.mode})")
        assert self.log.record is not None
        self.registry.carry("update", self.log.record.to_dict())
        try:
            await self.kexec.run(plan)
        except KernelGone:  # luod outlived the kexec (the simulator): it stops as if rebooted
            self.on_kexec()
        except LuodError as exc:
            self.machine.go(Phase.PREPARED, f"reboot failed: {exc.message}")
            self._abort(
                f"reboot failed ({exc.code}): the kernel rolled the freeze back", outcome="failed"
            )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never ran its own abort: do it here."""
        if task.cancelled() and self.machine.abortable:
            self._abort(self._abort_reason)
        if self._task is task:
            self._task = None

    def _abort(self, reason: str, outcome: str = "aborted") -> None:
        self.machine.go(Phase.ABORTING, reason)
        for vm_id, conn in self.connections:
            if dialect.may_send("RESUME", conn.capabilities):
                conn.push(codec.encode(codec.event("RESUME", id=vm_id, reason=reason)))
        if self.log.running():
            self.log.resumed(list(self.registry.vms))
        if self._loaded and self.unload_on_abort:
            try:
                self.backend.unload_kernel()
            except LuoError as exc:
                log.warning("unload-failed", error=str(exc))
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
        if not data:
            return
        record = self.log.reopen(data, started)
        asked = record.request.get("deadlines", {})
        self.machine.deadlines = {
            **self._base_deadlines,
            **{Phase(k): v for k, v in asked.items() if k == "reclaiming"},
        }
        self.machine.go(Phase.RECLAIMING, "luod started after the kexec")
        self._maybe_complete()

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
        if self.machine.phase is Phase.RECLAIMING and not self._unfinished():
            self.machine.go(Phase.IDLE, "every VM reclaimed and done")
            self.log.finish("completed", "")

    def _unfinished(self) -> list[str]:
        """VMs that came through the update and are not done (new registrations don't count)."""
        came = (VmState.INCOMING, VmState.RECLAIMED)
        return [v.id for v in self.registry.vms.values() if v.state in came]
