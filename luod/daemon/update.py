"""The update driver: performs prepare → freeze → kexec (and abort) step by step, asking the
pure state machine (luod.core.orchestrator) for every move, and keeps the blackout timeline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from luod.core import compat, dialect, handoff, kexec_mode, preflight, timeline
from luod.core.clock import Clock
from luod.core.kexec_mode import KexecPlan, SystemdFacts
from luod.core.model import Mode, VmState
from luod.core.orchestrator import Phase, Transition, UpdateMachine
from luod.core.registry import Registry
from luod.errors import LuodError
from luod.kernel import LuoError
from luod.kernel.sim import SimulatedKexec
from luod.net import uplink
from luod.vmm import codec
from luod.vmm.server import Connection

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


def _no_systemctl() -> None:
    raise LuodError("kexec-mode", "no systemctl here", "set kexec.mode = direct")


@dataclass
class KexecSettings:
    """How the kexec step runs (luod.core.kexec_mode); the callables are the host adapters."""

    mode: str = "direct"  # configured: auto | direct | systemd
    facts: Callable[[], SystemdFacts] = lambda: SystemdFacts("memory")
    start: Callable[[], None] = _no_systemctl  # systemctl kexec
    stop_timeout: float = 120.0  # systemd accepted the kexec but never stopped luod: give up


class UpdateDriver:
    def __init__(
        self,
        registry: Registry,
        clients: dict[str, Connection],
        clock: Clock,
        notify: Callable[[dict[str, Any]], None],
        on_kexec: Callable[[], None],
        spawn: Spawn,
        unload_on_abort: bool = True,
        kexec: KexecSettings | None = None,
    ) -> None:
        self.registry = registry
        self.clients = clients
        self.clock = clock
        self.notify = notify
        self.on_kexec = on_kexec
        self.spawn = spawn
        self.unload_on_abort = unload_on_abort
        self.machine = UpdateMachine(clock, emit=self._emitted)
        self.record: timeline.UpdateRecord | None = None
        self.waiting: dict[str, asyncio.Future[str | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loaded = False
        self._abort_reason = "abort requested"
        self._asked: set[str] = set()  # VMs that were sent a barrier event
        self._base_deadlines = dict(self.machine.deadlines)
        self.kexec = kexec or KexecSettings()
        self._facts: SystemdFacts | None = None
        self._handed_to_systemd = False  # systemctl kexec accepted: systemd stops luod now
        self.running_image: Path | None = None  # None: the platform's guess (/boot/vmlinuz-*)

    def kexec_plan(self) -> KexecPlan:
        """The kexec mode that applies now; the host's facts are asked once per luod."""
        if self._facts is None:
            self._facts = self.kexec.facts()
        return kexec_mode.choose(self.kexec.mode, self._facts)

    @property
    def defers_signals(self) -> bool:
        """SIGTERM waits while freezing/frozen/rebooting, except for systemd's own stop after
        systemctl kexec (the sessions are in the fd store by then)."""
        return self.machine.defers_signals and not self._handed_to_systemd

    # --- requests ------------------------------------------------------------------------------
    def check(self, request: UpdateRequest) -> list[preflight.Check]:
        return self._preflight(request)[0]

    def _preflight(self, request: UpdateRequest) -> tuple[list[preflight.Check], compat.Assessment]:
        info = self.registry.backend.info()
        cmdline = request.cmdline if request.cmdline is not None else info.cmdline
        vms = list(self.registry.vms.values())
        assessment = compat.assess(
            self.registry.backend,
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
            frozenset(self._connected()),
            preflight.mem_total(),
            preflight.fd_limit(),
            self.kexec_plan(),
            {vm: self.clients[vm].capabilities for vm in self._connected()},
            assessment,
        )
        return preflight.run(ctx), assessment

    def start(self, request: UpdateRequest) -> timeline.UpdateRecord:
        """Preflight now (a refusal is raised to the caller), then run the update in a task."""
        if self.machine.phase is not Phase.IDLE:
            raise LuodError(
                "update-running",
                f"an update is {self.machine.phase}",
                "watch it, or abort it first",
            )
        self.record = timeline.UpdateRecord(
            request={**request.to_dict(), "kexec_mode": self.kexec_plan().mode}
        )
        self.machine.deadlines = {
            **self.machine.deadlines,
            **{Phase(k): v for k, v in request.deadlines.items()},
        }
        self.machine.go(Phase.PREPARING, f"requested by uid {request.requested_by}")
        checks, assessment = self._preflight(request)
        self.record.request["handover_abi"] = assessment.to_record()
        if assessment.to_record()["override"]:
            log.warning("abi-unverified", override=True, reason=assessment.verdict.message)
        failed = preflight.failed(checks)
        if failed:
            error = LuodError(
                "preflight-failed",
                "preflight refused: " + ", ".join(c.id for c in failed),
                "; ".join(f"{c.id}: {c.message} ({c.hint})" for c in failed),
            )
            self.machine.go(Phase.ABORTING, error.message)
            self.machine.go(Phase.IDLE, "nothing was changed")
            self._finish("refused", error.message)
            raise error
        self._task = self.spawn(self._run(request))
        self._task.add_done_callback(self._task_done)
        return self.record

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never ran its own abort: do it here."""
        if task.cancelled() and self.machine.abortable:
            self._abort(self._abort_reason)
        if self._task is task:
            self._task = None

    def abort(self, reason: str) -> None:
        if self._task is None or not self.machine.abortable:
            raise LuodError(
                "wrong-state",
                f"nothing to abort in phase {self.machine.phase}",
                "abort works before the kexec starts",
            )
        self._abort_reason = reason
        self._task.cancel(reason)

    def configure(
        self,
        deadlines: dict[str, float],
        unload_on_abort: bool,
        running_image: Path | None = None,
    ) -> None:
        """Default deadlines per phase (the configuration file), the abort policy, and where
        the running kernel's image is (kexec.running_image)."""
        self.running_image = running_image
        self._base_deadlines = {
            **self._base_deadlines,
            **{Phase(k): float(v) for k, v in deadlines.items()},
        }
        self.machine.deadlines = dict(self._base_deadlines)
        self.unload_on_abort = unload_on_abort

    def refuse_new_vms(self) -> None:
        if self.machine.phase not in (Phase.IDLE, Phase.PREPARED, Phase.RECLAIMING):
            raise LuodError(
                "update-running",
                f"an update is {self.machine.phase}",
                "register new VMs after it (or abort it)",
            )

    def shutdown(self) -> None:
        """luod is stopping: an update before the freeze is aborted (VMs resume); after
        systemctl kexec the update just stops waiting (systemd carries it on)."""
        if self._task is not None and self._handed_to_systemd:
            self._task.cancel("luod is stopped for systemctl kexec")
        elif self._task is not None and self.machine.abortable:
            self._abort_reason = "luod is stopping"
            self._task.cancel(self._abort_reason)

    def vmm_gone(self, vm_id: str) -> None:
        """A VMM disconnected: if luod was waiting for its READY, that is a refusal."""
        self.ready(vm_id, "its VMM disconnected before answering READY")

    def ready(self, vm_id: str, error: str | None) -> str | None:
        """Deliver a READY: "ok" when awaited, "late" when its barrier already ended (an abort
        raced it: RESUME follows), None when nothing ever asked this VM."""
        waiter = self.waiting.get(vm_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(error)
            return "ok"
        return "late" if vm_id in self._asked else None

    # --- the update ----------------------------------------------------------------------------
    async def _run(self, request: UpdateRequest) -> None:
        try:
            await self._prepare(request)
            self.machine.go(Phase.PREPARED, "every VM preserved")
            await self._freeze()
            self.machine.go(Phase.FROZEN, "every VM answered READY")
            await self._kexec()
        except asyncio.CancelledError:
            self._abort(self._abort_reason)
        except LuodError as exc:
            if self.machine.abortable:
                self._abort(f"{exc.code}: {exc.message}")
            else:
                self._finish("failed", f"{exc.code}: {exc.message}")
        finally:
            self._task = None

    async def _prepare(self, request: UpdateRequest) -> None:
        assert self.record is not None  # the link guests are reached by, timed after the kexec
        self.record.request["uplink"] = await asyncio.to_thread(uplink.default_uplink)
        handoff.load_next_kernel(self.registry, request.kernel, request.initrd, request.cmdline)
        self._loaded = True
        delegated = [v.id for v in self.registry.vms.values() if v.mode is Mode.DELEGATION]
        await self._barrier(delegated, "START_PRESERVATION", Phase.PREPARING)

    async def _freeze(self) -> None:
        self.machine.go(Phase.FREEZING, "operator or automatic freeze")
        await self._barrier(list(self.registry.vms), "FREEZE", Phase.FREEZING)

    async def _barrier(self, vms: list[str], event: str, phase: Phase) -> None:
        """Push ``event`` to each VM's client; every one must answer READY before the deadline.
        Which VMs are sent it, counted without it, or cannot answer: core.dialect decides."""
        loop = asyncio.get_running_loop()
        assert self.record is not None
        steps = {vm_id: self._barrier_step(vm_id, event) for vm_id in vms}
        for vm_id, step in steps.items():
            if step.action is dialect.Action.REFUSE:
                raise LuodError(
                    "vm-refused",
                    f"VM {vm_id} cannot answer {event}: {step.note}",
                    "see the pause check of the preflight",
                )
        for vm_id, step in steps.items():
            conn = self.clients[vm_id] if step.action is dialect.Action.SEND else None
            self.record.vm_event(vm_id, f"{event.lower()}_sent", self.clock.now())
            if step.record:
                self.record.vm_event(vm_id, step.record, self.clock.now())
            if conn is None:
                self._acked(vm_id, event, note=step.note)
                continue
            self.waiting[vm_id] = loop.create_future()
            self._asked.add(vm_id)
            fds = (
                (self.registry.delegate_fd(self.registry.get(vm_id)),)
                if event == "START_PRESERVATION"
                else ()
            )
            remaining = self.machine.remaining()
            deadline_ms = None if remaining is None else int(remaining * 1000)
            conn.push(codec.encode(codec.event(event, id=vm_id, deadline_ms=deadline_ms), fds))
        try:
            await self._collect(event, phase)
        finally:
            self.waiting.clear()

    def _barrier_step(self, vm_id: str, event: str) -> dialect.Step:
        assert self.record is not None
        conn = self.clients.get(vm_id)
        granted = None if conn is None or conn.closed else conn.capabilities
        acked = "preserve_ack" in self.record.vms.get(vm_id, {})
        return dialect.barrier_step(event, self.registry.get(vm_id).mode, granted, acked)

    async def _collect(self, event: str, phase: Phase) -> None:
        """Wait for every READY; the first refusal or the deadline ends the wait."""
        pending = {f: vm for vm, f in self.waiting.items()}
        while pending:
            done, _ = await asyncio.wait(
                pending, timeout=self.machine.remaining(), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                late = ", ".join(sorted(pending.values()))
                raise LuodError(
                    "deadline",
                    f"no READY to {event} from {late} in time",
                    f"{phase} deadline passed: those VMMs are stuck or gone",
                )
            for future in done:
                vm_id = pending.pop(future)
                if error := future.result():
                    raise LuodError(
                        "vm-refused",
                        f"VM {vm_id} answered {event} with: {error}",
                        "the VMM could not pause or preserve; fix it and retry",
                    )
                self._acked(vm_id, event)

    def _acked(self, vm_id: str, event: str, note: str = "") -> None:
        assert self.record is not None
        name = "freeze_ack" if event == "FREEZE" else "preserve_ack"
        self.record.vm_event(vm_id, name, self.clock.now())
        self.notify({"event": "VM_PROGRESS", "id": vm_id, "step": name, "note": note})

    async def wait(self) -> timeline.UpdateRecord | None:
        """Until the running update ends (for callers that want the outcome)."""
        task = self._task
        if task is not None:
            await asyncio.wait([task])
        return self.record

    async def _kexec(self) -> None:
        plan = self.kexec_plan()
        self.machine.go(Phase.REBOOTING, f"kexec ({plan.mode})")
        assert self.record is not None
        self.registry.extra["update"] = self.record.to_dict()
        try:
            if plan.mode == "systemd":
                await asyncio.to_thread(handoff.kexec_systemd, self.registry, self.kexec.start)
                await self._stopped_by_systemd()
            else:
                await asyncio.to_thread(handoff.kexec_direct, self.registry)
        except SimulatedKexec:
            self.on_kexec()
            return
        except LuodError as exc:
            self.machine.go(Phase.PREPARED, f"reboot failed: {exc.message}")
            self._abort(
                f"reboot failed ({exc.code}): the kernel rolled the freeze back", outcome="failed"
            )

    async def _stopped_by_systemd(self) -> None:
        """systemd accepted the kexec and will stop luod: wait for that (the cancel from
        shutdown() ends this task quietly). If it never comes, the kexec is abandoned."""
        self._handed_to_systemd = True
        log.info("kexec-handed-to-systemd", timeout=self.kexec.stop_timeout)
        try:
            await asyncio.sleep(self.kexec.stop_timeout)
        except asyncio.CancelledError:
            log.info("stopped-for-kexec", note="sessions are in systemd's fd store")
            return
        self._handed_to_systemd = False
        handoff.kexec_abandoned(self.registry)
        raise LuodError(
            "kexec-timeout",
            f"systemd did not stop luod within {self.kexec.stop_timeout:g} s of systemctl kexec",
            "see `journalctl -b` for the kexec job; kexec.mode = direct avoids systemd",
        )

    def _abort(self, reason: str, outcome: str = "aborted") -> None:
        self.machine.go(Phase.ABORTING, reason)
        self._resume_all(reason)
        if self._loaded and self.unload_on_abort:
            try:
                self.registry.backend.unload_kernel()
            except LuoError as exc:
                log.warning("unload-failed", error=str(exc))
        self._loaded = False
        self.machine.go(Phase.IDLE, "aborted: every VM resumed, sessions still preserved")
        self._finish(outcome, reason)

    def _resume_all(self, reason: str) -> None:
        for vm_id, conn in list(self.clients.items()):
            if dialect.may_send("RESUME", conn.capabilities):
                conn.push(codec.encode(codec.event("RESUME", id=vm_id, reason=reason)))

    def _finish(self, outcome: str, reason: str) -> None:
        if self.record is None:
            return
        self.record.outcome, self.record.reason = outcome, reason
        if outcome != "running":
            timeline.append_history(self.registry.state_dir, self.record)
        self.notify(
            {"event": "UPDATE_END", "id": self.record.id, "outcome": outcome, "reason": reason}
        )
        log.info("update-end", id=self.record.id, outcome=outcome, reason=reason)

    # --- after the kexec -----------------------------------------------------------------------
    def resume_after_kexec(self, started: Any) -> None:
        """Called once recovery took the sessions back: continue the record in RECLAIMING."""
        previous = self.registry.previous
        data = previous.extra.get("update") if previous else None
        if not data:
            return
        self.record = timeline.UpdateRecord.from_dict(data)
        asked = self.record.request.get("deadlines", {})
        self.machine.deadlines = {
            **self._base_deadlines,
            **{Phase(k): v for k, v in asked.items() if k == "reclaiming"},
        }
        now = self.clock.now()
        self.record.event("kernel_boot", timeline.kernel_boot_stamp(now))
        self.record.event("luod_start", started)
        self.record.event("sessions_retrieved", now)
        self.machine.go(Phase.RECLAIMING, "luod started after the kexec")
        self._maybe_complete()

    def _open_record(self) -> timeline.UpdateRecord | None:
        """The update record while it still takes events (not yet in the history)."""
        record = self.record
        return record if record is not None and record.outcome == "running" else None

    def recorded_uplink(self) -> str | None:
        """The uplink recorded before the kexec, while this boot's update record is open."""
        record = self._open_record()
        link = record.request.get("uplink") if record else None
        return str(link) if link else None

    def uplink_up(self, link: str) -> None:
        now = self.clock.now()
        if record := self._open_record():
            record.event("uplink_up", now)
        log.info("uplink-up", link=link, since_kernel_boot=round(now.boottime, 3))

    def vm_step(self, vm_id: str, step: str) -> None:
        if self.record is None or self.machine.phase is not Phase.RECLAIMING:
            return
        self.record.vm_event(vm_id, step, self.clock.now())
        self.notify({"event": "VM_PROGRESS", "id": vm_id, "step": step})
        self._maybe_complete()

    def reclaim_deadline_passed(self) -> None:
        if self.machine.phase is Phase.RECLAIMING:
            left = sorted(self._unfinished())
            log.warning("vms-unreclaimed", vms=left, note="sessions kept; never finished silently")
            self.machine.go(Phase.IDLE, f"grace period over; unreclaimed: {', '.join(left)}")
            self._finish("completed-with-unreclaimed", f"unreclaimed: {', '.join(left)}")

    def _maybe_complete(self) -> None:
        if self.machine.phase is Phase.RECLAIMING and not self._unfinished():
            self.machine.go(Phase.IDLE, "every VM reclaimed and done")
            self._finish("completed", "")

    def _unfinished(self) -> list[str]:
        """VMs that came through the update and are not done (new registrations don't count)."""
        came = (VmState.INCOMING, VmState.RECLAIMED)
        return [v.id for v in self.registry.vms.values() if v.state in came]

    def _connected(self) -> list[str]:
        return [vm for vm, conn in self.clients.items() if not conn.closed]

    def _emitted(self, transition: Transition) -> None:
        if self.record is not None:
            self.record.phase(transition.to_dict())
        self.notify({"event": "PHASE", **transition.to_dict()})
        log.info("phase", **{k: v for k, v in transition.to_dict().items() if k != "at"})
