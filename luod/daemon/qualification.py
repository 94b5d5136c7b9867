"""``QualificationDriver``: qualify a live update from kernel A to kernel B (issue 14 §1).

One step of a chain A,B[,A...]: canary sessions preserved (luod.core.qualify's plan), then an
ordinary update into the next kernel (the same preflight, the same kexec). The step's state
rides across the kexec in the manifest (``qualification``); the next kernel's luod retrieves
every canary, checks every byte and property, and either takes the next step (once the update
it came through is done with its VMs) or writes the report to the history (kind
``qualification``), where preflight check ``qualified`` finds it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from luod.core import statedir, timeline
from luod.core.custodian import Custody
from luod.core.model import VmState
from luod.core.orchestrator import Phase
from luod.core.registry import Registry
from luod.daemon.events import EventBus
from luod.daemon.qualification_qemu import PREFIX, CanarySettings, QemuCanary
from luod.daemon.update import UpdateDriver, UpdateRequest
from luod.errors import LuodError
from luod.kernel import Backend

if TYPE_CHECKING:  # a qualification's own work: imported by the first one, not at luod's start
    from luod.core import qualify
    from luod.daemon.qualification_canaries import Canaries
    from luod.daemon.qualification_chain import ChainKernel

log = structlog.get_logger("luod.qualify")
CARRIED = "qualification"
RUNNING_FILE = "qualification.json"
"""The running qualification and its canaries' names, in the state directory: a luod that
restarts (or a boot that did not come through the step's kexec) fails it and drops them."""
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


def _default_options() -> qualify.Options:
    from luod.core import qualify

    return qualify.Options()


@dataclass(frozen=True)
class QualifyRequest:
    chain: tuple[ChainKernel, ...]  # A (the running kernel's), B, ...
    options: qualify.Options = field(default_factory=_default_options)
    with_vms: bool = False
    qemu_canary: bool = False  # a real QEMU guest crosses each kexec too
    requested_by: int = 0
    deadlines: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain": [str(k.image) for k in self.chain],
            "options": self.options.to_dict(),
            "with_vms": self.with_vms,
            "qemu_canary": self.qemu_canary,
            "uid": self.requested_by,
            "deadlines": self.deadlines,
        }


class QualificationDriver:
    def __init__(
        self,
        registry: Registry,
        backend: Backend,
        custody: Custody,
        updates: UpdateDriver,
        events: EventBus,
        spawn: Spawn,
        canary: CanarySettings | None = None,
    ) -> None:
        self.registry = registry
        self.updates = updates
        self.spawn = spawn
        self._backend, self._custody = backend, custody
        self.qemu = QemuCanary(canary, spawn) if canary else None
        self.record: dict[str, Any] | None = None  # the running qualification, or the last
        self._plan: list[qualify.CanarySession] = []
        self._update_id: str | None = None  # the update of the running step
        self._idle = asyncio.Event()
        events.listen(self._on_event)

    @functools.cached_property
    def canaries(self) -> Canaries:
        """The canary sessions' preservation and check, made when a qualification needs them."""
        from luod.daemon.qualification_canaries import Canaries

        return Canaries(self._backend, self._custody)

    @property
    def running(self) -> bool:
        return self.record is not None and self.record["outcome"] == "running"

    # --- requests ------------------------------------------------------------------------------
    def start(self, request: QualifyRequest) -> dict[str, Any]:
        """Refuse (LuodError) or start the first step in the background; the record so far."""
        self._refuse(request)
        from luod.daemon.qualification_chain import describe

        self.record = {
            "kind": "qualification",
            "id": timeline.new_id(),
            "outcome": "running",
            "reason": "",
            "request": request.to_dict(),
            "chain": [describe(kernel) for kernel in request.chain],
            "steps": [],
            "started": time.time(),
        }
        self.spawn(self._guarded(self._step(0)))
        return dict(self.record)

    def listing(self) -> list[dict[str, Any]]:
        """Every qualification on record, newest first (the running one first)."""
        entries = timeline.read_history(self.registry.state_dir, kind="qualification")
        done = [r for r in entries if _is_qualification(r)]
        running = [self.record] if self.running and self.record else []
        return [*running, *reversed(done)]

    def get(self, qid: str) -> dict[str, Any]:
        for record in self.listing():
            if record.get("id") == qid:
                return record
        raise LuodError("unknown-qualification", f"no qualification {qid!r}", "list them")

    def _refuse(self, request: QualifyRequest) -> None:
        from luod.daemon.qualification_chain import check_boot, describe

        if self.running:
            raise LuodError("qualification-running", "a qualification is running", "wait")
        if self.updates.machine.phase is not Phase.IDLE:
            raise LuodError(
                "update-running", f"an update is {self.updates.machine.phase}", "qualify after it"
            )
        if len(request.chain) < 2:
            raise LuodError("bad-chain", "a chain names two kernels at least", "--chain A,B[,A]")
        preserved = [v.id for v in self.registry.vms.values() if v.state is not VmState.LOST]
        if preserved and not request.with_vms:
            raise LuodError(
                "vms-preserved",
                f"VMs are preserved on this host: {', '.join(sorted(preserved))}",
                "qualify on a canary host, or pass --with-vms to take them through the kexec",
            )
        for kernel in request.chain:
            check_boot(kernel)
        if request.qemu_canary:
            self._check_qemu()
        running = self.registry.info.release
        first = describe(request.chain[0])["release"]
        if first != running:
            raise LuodError(
                "bad-chain",
                f"the chain starts with {first}, but {running} is running",
                "the chain's first kernel is the running kernel's image",
            )

    def _check_qemu(self) -> None:
        why = self.qemu.unavailable() if self.qemu else "this luod runs no QEMU canary"
        if why:
            raise LuodError(
                "qemu-canary-unavailable",
                f"no QEMU canary on this host: {why}",
                "install QEMU (qemu-system-x86 on Debian) or qualify without --qemu-canary",
            )

    # --- one step ------------------------------------------------------------------------------
    async def _step(self, index: int) -> None:
        """Canaries into the outgoing sessions, then the update into chain[index + 1]."""
        from luod.core import preflight, qualify

        assert self.record is not None
        request = self.record["request"]
        options = qualify.Options.from_dict(request["options"])
        limit = preflight.fd_limit() - 64 - self.registry.open_sessions()
        self._plan = qualify.plan(f"{self.record['id']}{index}", options, limit)
        self._write_running()
        began = time.time()
        try:
            await asyncio.to_thread(self.canaries.preserve, self._plan)
        except (OSError, LuodError) as exc:
            self._finish("failed", f"canaries not preserved: {exc}")
            return
        step = {"index": index, "from_release": self.record["chain"][index]["release"]}
        step["to_release"] = self.record["chain"][index + 1]["release"]
        step["timings"] = {"canaries_seconds": round(time.time() - began, 3)}
        if request.get("qemu_canary") and not await self._qemu_before(index, step):
            return
        step["kexec_requested"] = time.time()
        self.registry.carry(CARRIED, {"record": self.record, "step": step, "plan": self._dump()})
        self._go(index, step, request)

    async def _qemu_before(self, index: int, step: dict[str, Any]) -> bool:
        """The QEMU canary runs and is preserved (booted at the first step; restored and
        preserved again by the previous step's verify); its state before this step's kexec
        rides in ``step``. False: the qualification failed (the step records why)."""
        from luod.core import qualify

        assert self.record is not None and self.qemu is not None
        began = time.time()
        checks = await self.qemu.start(self.record["id"]) if index == 0 else []
        if all(c.result == "pass" for c in checks):
            first, second = await self.qemu.running_probes()
            checks += qualify.qemu_before(first, second)
            step["qemu_canary"] = second
        step["timings"]["qemu_canary_seconds"] = round(time.time() - began, 3)
        if all(c.result == "pass" for c in checks):
            step["checks_before"] = [c.to_dict() for c in checks]
            return True
        self.canaries.drop()
        self.record["steps"].append(
            {**step, "update": None, "checks": [c.to_dict() for c in checks]}
        )
        self._failed(self.record["steps"][-1])
        return False

    def _go(self, index: int, step: dict[str, Any], request: dict[str, Any]) -> None:
        assert self.record is not None
        kernel = self.record["chain"][index + 1]
        update = UpdateRequest(
            Path(kernel["image"]),
            initrd=Path(kernel["initrd"]) if kernel.get("initrd") else None,
            cmdline=kernel.get("cmdline"),
            deadlines=dict(request.get("deadlines", {})),
            requested_by=int(request.get("uid", 0)),
        )
        try:
            self._update_id = self.updates.start(update).id
        except LuodError as exc:  # preflight.Refused included: its message names the checks
            self.record["steps"].append({**step, "update": None, "checks": []})
            hint = f" ({exc.hint})" if exc.hint else ""
            self._finish("failed", f"{exc.code}: {exc.message}{hint}")
            return
        log.info("qualification-step", id=self.record["id"], step=index, update=self._update_id)

    def _dump(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self._plan]

    def _on_event(self, event: dict[str, Any]) -> None:
        """The step's update ended before the kexec (aborted, failed): the step failed."""
        phase = event.get("to") if event.get("event") == "PHASE" else None
        if phase == str(Phase.IDLE):
            self._idle.set()
        if phase == str(Phase.REBOOTING) and self.qemu is not None and self.running:
            self.qemu.end()  # frozen: QEMU killed, its RAM and state stay with luod
        if event.get("event") != "UPDATE_END" or event.get("id") != self._update_id:
            return
        self._update_id = None
        if self.running and event.get("outcome") != "completed":
            self._finish("failed", f"update {event.get('outcome')}: {event.get('reason')}")

    def _write_running(self) -> None:
        names = [s.name for s in self._plan]
        data = json.dumps({"record": self.record, "canaries": names})
        statedir.write_atomic(self.registry.state_dir / RUNNING_FILE, data.encode())

    def _finish(self, outcome: str, reason: str) -> None:
        assert self.record is not None
        self.canaries.drop()
        if self.qemu is not None and self.record["request"].get("qemu_canary"):
            qid = self.record["id"]
            self.spawn(self.qemu.stop(qid, self._forget_canary_vm(qid)))
        self.registry.carry(CARRIED, None)
        statedir.unlink(self.registry.state_dir / RUNNING_FILE)
        self.record.update(outcome=outcome, reason=reason, finished=time.time())
        timeline.append_entry(self.registry.state_dir, self.record)
        log.info("qualification-end", id=self.record["id"], outcome=outcome, reason=reason)

    def reserved_id(self, vm_id: str) -> str:
        """Why a VMM may not REGISTER or SUBSCRIBE ``vm_id`` ("": it may): ids of the QEMU
        canary's form are luod's, for the running qualification's canary alone (a killed
        luod's luod-qemu would take its VM again after this luod dropped it)."""
        if not vm_id.startswith(PREFIX):
            return ""
        record = self.record if self.running else None
        if record and record["request"].get("qemu_canary") and vm_id == PREFIX + record["id"]:
            return ""
        return "the QEMU canary of a qualification that is not running"

    def _forget_canary_vm(self, qid: str) -> Callable[[], None]:
        """Drops the canary VM a failed luod-qemu left (registered, preserved or lost: an
        incoming one is the update's, until its reclaim deadline)."""
        assert self.qemu is not None
        vm_id = self.qemu.vm_id(qid)

        def forget() -> None:
            vm = self.registry.vms.get(vm_id)
            if vm is not None and vm.state not in (VmState.INCOMING, VmState.RECLAIMED):
                self.registry.forget(vm, finish=False)
                log.info("qemu-canary-forgotten", vm=vm_id, state=str(vm.state))

        return forget

    # --- at start-up ---------------------------------------------------------------------------
    def resume(self, after_kexec: bool) -> None:
        """After a qualification's kexec: verify it (in the background). A qualification that
        was running otherwise (luod restarted, the host rebooted) failed: its canaries go."""
        previous = self.registry.previous
        carried = previous.extra.get(CARRIED) if previous and after_kexec else None
        if carried:
            self._resume_after_kexec(carried)
            return
        try:
            raw = statedir.read(self.registry.state_dir / RUNNING_FILE)
            left = json.loads(raw) if raw is not None else None
        except (OSError, ValueError) as exc:  # a link or a FIFO planted there: not followed
            log.warning("qualification-record-unreadable", error=str(exc))
            return
        if not isinstance(left, dict):
            return
        for name in left.get("canaries", []):
            self.canaries.custody.withdraw(name)  # recovery closed luod's copy
        self.record = dict(left["record"])
        self._finish(
            "failed", "luod restarted (or the host rebooted) during the step; canaries dropped"
        )

    def _resume_after_kexec(self, carried: dict[str, Any]) -> None:
        from luod.core import qualify

        self.record = dict(carried["record"])
        plan = [qualify.CanarySession.from_dict(s) for s in carried["plan"]]
        self.spawn(self._guarded(self._verify(dict(carried["step"]), plan)))

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """A bug in a qualification fails it, never luod (its task group)."""
        try:
            await work
        except Exception as exc:
            log.exception("qualification-error")
            if self.running:
                self._finish("failed", f"luod error: {exc!r}")

    async def _verify(self, step: dict[str, Any], plan: list[qualify.CanarySession]) -> None:
        assert self.record is not None
        began = time.time()
        step["timings"]["kexec_seconds"] = round(began - step.pop("kexec_requested"), 3)
        qemu, memfds = await asyncio.gather(  # QEMU's start waits, the hashing computes
            self._qemu_after(step), asyncio.to_thread(self.canaries.verify, plan)
        )
        checks = self._kernel_checks(step) + qemu + memfds
        step["timings"]["verify_seconds"] = round(time.time() - began, 3)
        step["checks"] = step.pop("checks_before", []) + [c.to_dict() for c in checks]
        step["update"] = self.updates.record.id if self.updates.record else None
        step["liveupdate_number"] = self.registry.info.liveupdate_number
        self.record["steps"].append(step)
        if self._failed(step):
            return
        await self._when_idle()  # the VMs that came along (--with-vms) are done, or not
        step["checks"] += [c.to_dict() for c in self._update_checks()]
        if self._failed(step):
            return
        next_index = step["index"] + 1
        if next_index + 1 >= len(self.record["chain"]):
            self._finish("passed", "")
        else:
            await self._step(next_index)

    async def _qemu_after(self, step: dict[str, Any]) -> list[qualify.Check]:
        """The QEMU canary restored (first: the update waits for its DONE) and judged."""
        from luod.core import qualify

        before = step.get("qemu_canary")
        if before is None or self.qemu is None or self.record is None:
            return []
        began = time.time()
        checks = await self.qemu.restore(self.record["id"])
        if all(c.result == "pass" for c in checks):
            checks += qualify.qemu_after(before, *await self.qemu.running_probes())
        step["timings"]["qemu_restore_seconds"] = round(time.time() - began, 3)
        return checks

    def _failed(self, step: dict[str, Any]) -> bool:
        """Fails the qualification if a check of ``step`` failed."""
        failed = [c["name"] for c in step["checks"] if c["result"] != "pass"]
        if failed:
            self._finish("failed", f"{len(failed)} checks failed: {', '.join(failed[:5])}")
        return bool(failed)

    def _update_checks(self) -> list[qualify.Check]:
        """The update that carried the step: it completed, every VM it carried is done."""
        from luod.core.qualify import check

        record = self.updates.record
        if record is None:
            return [check("update: outcome", "completed", "no update record")]
        checks = [check("update: outcome", "completed", record.outcome)]
        for vm, steps in sorted(record.vms.items()):
            if "freeze_ack" in steps:
                done = "done" if "done" in steps else "not done"
                checks.append(check(f"vm {vm}: reclaimed and done", "done", done))
        return checks

    def _kernel_checks(self, step: dict[str, Any]) -> list[qualify.Check]:
        assert self.record is not None
        from luod.core.qualify import check

        info = self.registry.info
        expected = self.record["chain"][step["index"] + 1]
        previous = self.registry.previous
        before = previous.liveupdate_number if previous else None
        return [
            check("kernel: release", expected["release"], info.release),
            check("kernel: version", expected["version"], info.version),
            check(
                "kernel: liveupdate number",
                (before or 0) + 1,
                info.liveupdate_number,
            ),
        ]

    async def _when_idle(self) -> None:
        """The update this boot came through is done with its VMs (phase idle)."""
        while self.updates.machine.phase is not Phase.IDLE:
            self._idle.clear()
            await self._idle.wait()


def _is_qualification(entry: dict[str, Any]) -> bool:
    return entry.get("kind") == "qualification"
