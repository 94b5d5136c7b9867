"""``luoctl update watch`` on a terminal: a live table (rich) of the update as luod sees it.

Only luod's clock: every time shown is one luod stamped (an event's ``at``); what ticks between
events (elapsed, deadline left, blackout so far) is the last luod stamp plus the time since it
arrived, measured on luoctl's monotonic clock. When stdout is not a terminal, or with
``--json``, ``watch`` prints plain lines (luod.cli.follow).

A host of 1000 VMs sends thousands of events in an update, and a table of 1000 rows took rich
~0.45 s to draw: redrawn for each event, the view fell minutes behind the update. So the table
shows as many VMs as the terminal has rows for, the paused ones first (the longest paused on
top), with a line counting the rest by state; and it is redrawn at most ``FRAMES_PER_SECOND``
times a second, whatever the rate of events.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from luod.cli import follow, render
from luod.cli.client import Api
from luod.cli.moments import epoch
from luod.cli.output import EXIT_ERROR, Output
from luod.cli.sse import Event

Command = Callable[[Api, argparse.Namespace, Output], int]
FRAMES_PER_SECOND = 4
CHROME_LINES = 5  # the headline (two lines), the table's header, the "more" line, the cursor
ORDER = ("paused", "freezing", "resumed", "reclaimed", "preserved", "done")
"""Which VMs come first when not all fit: those whose guests are paused now."""
STATE_OF_STEP = {
    "preserve_ack": "preserved",
    "freeze_sent": "freezing",
    "freeze_ack": "paused",
    "resumed": "resumed",
    "reclaimed": "reclaimed",
    "done": "done",
}


def choose(args: argparse.Namespace, out: Output) -> Command:
    """The command to run: ``update watch`` draws the live view on a terminal."""
    run: Command = args.run
    if run is follow.update_watch and not out.as_json and out.out.isatty():
        return update_watch
    return run


@dataclass
class VmRow:
    state: str
    connected: bool | None = None
    step: str = ""
    step_at: float | None = None
    paused_at: float | None = None  # freeze ack (luod's realtime)
    running_at: float | None = None  # done, or resumed after an abort


@dataclass
class Board:
    """The view's state, fed events; pure (tests/unit/test_luoctl_live.py)."""

    vms: dict[str, VmRow] = field(default_factory=dict)
    phase: str = ""
    update: dict[str, Any] | None = None
    started: float | None = None
    phase_at: float | None = None
    deadline: float | None = None
    stamp: float | None = None  # luod's realtime of the last stamped event ...
    received: float = 0.0  # ... and luoctl's monotonic time when it arrived

    @classmethod
    def of(cls, vms: list[dict[str, Any]]) -> Board:
        rows = {vm["id"]: VmRow(str(vm["state"]), vm.get("connected")) for vm in vms}
        return cls(vms=rows)

    def take(self, event: Event, received: float) -> None:
        data, at = event.data, _at(event.data)
        if at is not None:
            self.stamp, self.received = at, received
        if event.name == "STATE":
            self.phase, self.update = str(data.get("phase")), data.get("update")
            self._from_record(self.update or {})
        elif event.name == "PHASE":
            self.phase, self.phase_at = str(data.get("to")), at
            self.deadline = data.get("deadline_seconds")
            if data.get("from") == "idle":
                self.started = at  # a new update: the last one's steps are history
                self.vms = {k: VmRow(v.state, v.connected) for k, v in self.vms.items()}
        elif event.name == "VM_PROGRESS":
            self._step(str(data.get("id")), str(data.get("step")), at)

    def _from_record(self, record: dict[str, Any]) -> None:
        if record.get("outcome") != "running":
            return
        self.started = _epoch(record.get("started_at"))
        phases = record.get("phases") or []
        self.phase_at = _epoch(phases[-1]["at"]) if phases else None
        for vm_id, steps in (record.get("vms") or {}).items():
            for step, moment in sorted(steps.items(), key=lambda kv: str(kv[1])):
                self._step(vm_id, step, _epoch(moment))

    def _step(self, vm_id: str, step: str, at: float | None) -> None:
        row = self.vms.setdefault(vm_id, VmRow("?"))
        row.step, row.step_at = step, at
        row.state = STATE_OF_STEP.get(step, row.state)
        if step == "freeze_ack":
            row.paused_at, row.running_at = at, None
        elif step in ("done", "resumed"):
            row.running_at = at

    def now(self, monotonic: float) -> float | None:
        """luod's realtime now, as far as luoctl can tell."""
        return None if self.stamp is None else self.stamp + (monotonic - self.received)

    def render(self, monotonic: float, rows: int | None = None) -> Group:
        """The headline and the table of at most ``rows`` VMs (None: every one)."""
        now = self.now(monotonic)
        return Group(Text(self.headline(now)), self.table(now, rows))

    def headline(self, now: float | None) -> str:
        record = self.update or {}
        if self.phase == "idle" or not self.phase:
            last = f" (last: update {record['id']} {record['outcome']})" if record else ""
            return f"phase idle: no update is running{last}; waiting for one"
        kernel = (record.get("request") or {}).get("kernel", "")
        parts = [f"phase {self.phase}"]
        if now is not None and self.started is not None:
            parts.append(f"elapsed {now - self.started:.1f} s")
        if now is not None and self.deadline is not None and self.phase_at is not None:
            parts.append(f"deadline in {max(0.0, self.deadline - (now - self.phase_at)):.1f} s")
        which = f"\nupdate {record.get('id', '?')} -> {kernel}" if kernel else ""
        return "  ".join(parts) + which

    def table(self, now: float | None, rows: int | None = None) -> Table:
        table = Table(box=None, pad_edge=False)
        for column in ("VM", "STATE", "VMM", "LAST EVENT", "BLACKOUT"):
            table.add_column(column)
        ranked = sorted(self.vms.items(), key=_rank)
        shown = ranked if rows is None or len(ranked) <= rows else ranked[: max(rows - 1, 1)]
        for vm_id, row in shown:
            link = {True: "connected", False: "disconnected", None: "-"}[row.connected]
            last = f"{row.step} {render.clock_of(row.step_at)}" if row.step else "-"
            table.add_row(vm_id, row.state, link, last, _blackout(row, now))
        if len(shown) < len(ranked):
            table.add_row(f"… {len(ranked) - len(shown)} more", _count(ranked[len(shown) :]))
        return table


def _rank(item: tuple[str, VmRow]) -> tuple[int, float, str]:
    vm_id, row = item
    order = ORDER.index(row.state) if row.state in ORDER else len(ORDER)
    return order, row.paused_at if row.paused_at is not None else math.inf, vm_id


def _count(rows: list[tuple[str, VmRow]]) -> str:
    counts = Counter(row.state for _, row in rows)
    return ", ".join(f"{n} {state}" for state, n in counts.items())


class Frames:
    """Whether to redraw now: at most ``per_second`` times a second (the last event's state is
    drawn at the next frame, or when the view ends)."""

    def __init__(self, per_second: float = FRAMES_PER_SECOND) -> None:
        self.interval = 1.0 / per_second
        self.last = -math.inf

    def due(self, monotonic: float) -> bool:
        if monotonic - self.last < self.interval:
            return False
        self.last = monotonic
        return True


def _blackout(row: VmRow, now: float | None) -> str:
    if row.paused_at is None:
        return "-"
    end = row.running_at if row.running_at is not None else now
    if end is None:
        return "-"
    ongoing = "" if row.running_at is not None else " …"
    return f"{end - row.paused_at:.3f} s{ongoing}"


def _at(data: dict[str, Any]) -> float | None:
    return _epoch(data.get("at")) if isinstance(data.get("at"), str) else None


def _epoch(moment: Any) -> float | None:
    return epoch(moment) if isinstance(moment, str) else None


def update_watch(api: Api, args: argparse.Namespace, out: Output) -> int:
    """The live table until the update ends; then its summary, as ``update wait`` prints it."""
    board = Board.of(api.get("/v1/vms")["vms"])
    progress = follow.Progress()
    console = Console(file=out.out)
    frames = Frames()

    def frame() -> Group:
        return board.render(time.monotonic(), max(console.size.height - CHROME_LINES, 1))

    with Live(frame(), console=console, auto_refresh=False) as screen:
        for event in follow.events(api, math.inf, progress):
            if event is not None:
                progress.take(event)
                board.take(event, time.monotonic())
            ended = progress.phase == "rebooting" or progress.outcome is not None
            if ended or frames.due(time.monotonic()):
                screen.update(frame(), refresh=True)
            if ended:
                break
    if progress.phase == "rebooting":
        return follow.rebooting(out, progress)
    if progress.outcome is not None:
        return follow.ended(api, out, progress.outcome)
    return EXIT_ERROR
