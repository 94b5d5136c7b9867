"""The running update's record: its blackout timeline, what it tells the event bus, and the
history line it becomes when it ends (luod.core.timeline holds the data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from luod.core import jsontext, record_lines, timeline
from luod.core import running as on_disk
from luod.core.clock import Clock, Stamp
from luod.core.orchestrator import Phase, Transition
from luod.daemon import heap, process_start
from luod.daemon.events import EventBus

log = structlog.get_logger("luod.update")
AFTER_THE_SYNC = frozenset({Phase.FREEZING, Phase.FROZEN, Phase.REBOOTING})
"""Entered after the host's sync before FREEZE: the record on disk grows by a line (the
transition, the freeze acks), it is not rewritten (a new file and a rename) where the sync
before reboot() would have to write it inside the VMs' pause (issue 17)."""


class UpdateLog:
    def __init__(self, clock: Clock, events: EventBus, state_dir: Path, boot_id: str = "") -> None:
        self.clock = clock
        self.events = events
        self.state_dir = state_dir
        self.boot_id = boot_id
        self.record: timeline.UpdateRecord | None = None
        self._unsaved: list[tuple[str, str, Stamp]] = []  # VM steps since the record's write
        self._lines = on_disk.appender(state_dir)  # kept open while an update runs
        self._since_staged: list[bytes] | None = None  # change lines since ``stage`` (handoff)

    def open(self, request: dict[str, Any]) -> timeline.UpdateRecord:
        self.record, self._unsaved = timeline.UpdateRecord(request=request), []
        self._since_staged = None
        return self.record

    def adopt(self, record: timeline.UpdateRecord) -> None:
        """The record of an update a killed luod left running (luod.core.running)."""
        self.record, self._unsaved, self._since_staged = record, [], None

    def reopen(self, data: dict[str, Any], started: Stamp) -> timeline.UpdateRecord:
        """After the kexec: the record the previous kernel's luod carried over, with this
        boot's first stamps (kernel boot, luod's start, sessions retrieved)."""
        self.record, self._unsaved = timeline.UpdateRecord.from_dict(data), []
        self._since_staged = None
        now = self.clock.now()
        self.record.event("kernel_boot", timeline.kernel_boot_stamp(now))
        if execed := timeline.since_boot_stamp(started, process_start.since_boot()):
            self.record.event("luod_exec", execed)  # the boot's part ends, luod's start-up begins
        self.record.event("luod_start", started)
        self.record.event("sessions_retrieved", now)
        return self.record

    def running(self) -> timeline.UpdateRecord | None:
        """The update record while it still takes events (not yet in the history)."""
        record = self.record
        return record if record is not None and record.outcome == "running" else None

    # --- what happens -------------------------------------------------------------------------
    def phase(self, transition: Transition, deadline: float | None = None) -> None:
        """``deadline``: seconds the phase entered may last (None: it waits for something else);
        the event carries it, so a view can count down on luod's clock."""
        if self.record is not None:
            self.record.phase(transition.to_dict())
            if transition.target in AFTER_THE_SYNC:
                self._append(transition.to_dict())
            else:
                self._save()
        self.events.publish(
            {"event": "PHASE", **transition.to_dict(), "deadline_seconds": deadline}
        )
        log.info("phase", **{k: v for k, v in transition.to_dict().items() if k != "at"})

    def sent(self, vm_id: str, event: str) -> None:
        self.stamp(vm_id, f"{event.lower()}_sent")

    def stamp(self, vm_id: str, name: str) -> None:
        assert self.record is not None
        now = self.clock.now()
        self.record.vm_event(vm_id, name, now)
        self._unsaved.append((vm_id, name, now))

    def stamped(self, vm_id: str, name: str) -> bool:
        """Whether this update's record has step ``name`` for the VM."""
        return self.record is not None and name in self.record.vms.get(vm_id, {})

    def acked(self, vm_id: str, event: str, note: str = "") -> None:
        assert self.record is not None
        name = "freeze_ack" if event == "FREEZE" else "preserve_ack"
        self._progress(vm_id, name, note)

    def reclaim_step(self, vm_id: str, step: str) -> None:
        """After the kexec: a VM ``reclaimed`` (or claimed) its files, or is ``done``; kept on
        disk at once (one line appended), so that a luod restarted mid-reclaim goes on from
        there."""
        self._progress(vm_id, step)
        self._append(None)

    def resumed(self, vm_ids: list[str]) -> None:
        """An abort sent RESUME: the VMs it had paused run again (their blackout ends)."""
        for vm_id in vm_ids:
            if self.stamped(vm_id, "freeze_ack"):
                self._progress(vm_id, "resumed")

    def _progress(self, vm_id: str, step: str, note: str = "") -> None:
        assert self.record is not None
        now = self.clock.now()
        self.record.vm_event(vm_id, step, now)
        self._unsaved.append((vm_id, step, now))
        event = {"event": "VM_PROGRESS", "id": vm_id, "step": step, "at": now.to_dict()}
        self.events.publish({**event, "note": note} if note else event)

    def uplink(self, link: str | None) -> None:
        """Before the kexec: the link guests are reached by, timed after the kexec."""
        assert self.record is not None
        self.record.request["uplink"] = link

    def recorded_uplink(self) -> str | None:
        """The uplink recorded before the kexec, while this boot's update record is open."""
        record = self.running()
        link = record.request.get("uplink") if record else None
        return str(link) if link else None

    def uplink_up(self, link: str) -> None:
        now = self.clock.now()
        if record := self.running():
            record.event("uplink_up", now)
        log.info("uplink-up", link=link, since_kernel_boot=round(now.boottime, 3))

    def flush(self) -> None:
        """The steps not yet on disk, appended now: the barrier calls it while it waits for the
        VMMs, so that the line the last READY's transition writes, inside every VM's pause, is
        short (at 100 VMs it carried 200 stamps: a millisecond on a host), and so is the kexec
        line, which carries the same lines (``stage``)."""
        if self._unsaved:
            self._append(None)

    def stage(self) -> tuple[dict[str, Any], str]:
        """Before the freeze, for the handoff's snapshot: the record as it is now (a copy) and
        its text. From now on the change lines appended are also kept for the kexec line
        (``since_staged``), which carries them after this text: inside every VM's pause only
        they are encoded, not the whole record again (issue 17)."""
        assert self.record is not None
        data = self.record.to_dict()
        self._since_staged = []
        # a copy by from_dict (the steps' stamps are never changed in place): 10x a json.loads
        return timeline.UpdateRecord.from_dict(data).to_dict(), jsontext.dumps(data)

    def since_staged(self) -> list[bytes] | None:
        """The change lines appended since ``stage`` (None: not staged, or the record was
        written whole since, so the lines no longer say everything)."""
        return self._since_staged

    def _save(self) -> None:
        """On disk while it runs: a luod killed now finds it when it starts (core.running)."""
        if self.record is not None and self.record.outcome == "running":
            on_disk.write(self.state_dir, self.record, self.boot_id)
        self._unsaved.clear()
        self._since_staged = None

    def _append(self, transition: dict[str, Any] | None) -> None:
        """What changed since ``_save``, as one line (luod.core.running)."""
        if self.record is not None and self.record.outcome == "running":
            line = record_lines.encode(transition, self._unsaved)
            on_disk.append(self._lines, line)
            if self._since_staged is not None:
                self._since_staged.append(line)
        self._unsaved.clear()

    def close(self) -> None:
        """Close the record's kept fd (luod's shutdown); a later line opens it again."""
        self._lines.close()

    def finish(self, outcome: str, reason: str) -> None:
        if self.record is None:
            return
        self.record.outcome, self.record.reason = outcome, reason
        if outcome != "running":
            timeline.append_history(self.state_dir, self.record)
            on_disk.clear(self.state_dir)
            self._lines.close()
        self.events.publish(
            {"event": "UPDATE_END", "id": self.record.id, "outcome": outcome, "reason": reason}
        )
        log.info("update-end", id=self.record.id, outcome=outcome, reason=reason)
        heap.give_back()
