"""The blackout timeline of one update, carried across the kexec in the manifest.

Before the kexec: every phase transition and each VM's FREEZE sent / READY received. After it:
the new kernel's boot time, luod's start, sessions retrieved, each VM's reclaim and done.
Blackout per VM = its freeze ack → its done, in realtime (the only clock that survives kexec).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, overload

from luod.core import statedir
from luod.core.clock import Stamp

HISTORY: Final = "history.jsonl"
HISTORY_KEEP: Final = 1000
"""Update records kept in history.jsonl: the oldest beyond it are dropped when one ends
(issue 13, finding 11; docs/limits.md)."""


def new_id() -> str:
    """An update's (or a qualification's) id: 12 random hex digits, as ``uuid4().hex[:12]``
    gave (its first 6 bytes are random), without importing uuid (and platform, which it
    imports) on luod's start-up path (bench/NOTES.md, Start-up)."""
    return os.urandom(6).hex()


@dataclass
class UpdateRecord:
    id: str = field(default_factory=new_id)
    request: dict[str, Any] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, float]] = field(default_factory=dict)
    outcome: str = "running"
    reason: str = ""
    aborted_by: str = ""  # who asked for the abort: "uid 0", or the REST token's name

    def phase(self, transition: dict[str, Any]) -> None:
        self.phases.append(transition)

    def vm_event(self, vm: str, name: str, at: Stamp) -> None:
        self.vms.setdefault(vm, {})[name] = at.to_dict()

    def event(self, name: str, at: Stamp) -> None:
        self.events[name] = at.to_dict()

    def blackout(self) -> dict[str, float | None]:
        """Seconds from each VM's freeze ack to its done, or to its resume when the update was
        aborted (None while incomplete)."""
        result: dict[str, float | None] = {}
        for vm, stamps in self.vms.items():
            start, end = stamps.get("freeze_ack"), stamps.get("done") or stamps.get("resumed")
            result[vm] = round(end["realtime"] - start["realtime"], 6) if start and end else None
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "request": self.request,
            "phases": self.phases,
            "vms": self.vms,
            "events": self.events,
            "outcome": self.outcome,
            "reason": self.reason,
            "aborted_by": self.aborted_by,
            "blackout": self.blackout(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpdateRecord:
        return cls(
            id=str(data["id"]),
            request=dict(data.get("request", {})),
            phases=list(data.get("phases", [])),
            vms={k: dict(v) for k, v in data.get("vms", {}).items()},
            events=dict(data.get("events", {})),
            outcome=str(data.get("outcome", "running")),
            reason=str(data.get("reason", "")),
            aborted_by=str(data.get("aborted_by", "")),
        )


def kernel_boot_stamp(now: Stamp) -> Stamp:
    """When this kernel started, from the current realtime minus boottime."""
    return Stamp(now.realtime - now.boottime, now.monotonic - now.boottime, 0.0)


def since_boot_stamp(now: Stamp, since_boot: float | None) -> Stamp | None:
    """The moment ``since_boot`` seconds after this kernel started, on ``now``'s clocks; None
    when it is not between the kernel's start and ``now`` (unknown, or another clock's)."""
    if since_boot is None or not 0 <= since_boot <= now.boottime:
        return None
    ago = now.boottime - since_boot
    return Stamp(now.realtime - ago, now.monotonic - ago, since_boot)


def append_history(state_dir: Path, record: UpdateRecord, keep: int = HISTORY_KEEP) -> None:
    append_entry(state_dir, {"finished": time.time(), **record.to_dict()}, keep)


def append_entry(state_dir: Path, entry: dict[str, Any], keep: int = HISTORY_KEEP) -> None:
    """One history line: an update (kind absent) or another kind ("qualification")."""
    line = json.dumps(entry, sort_keys=True)
    statedir.append(state_dir / HISTORY, (line + "\n").encode())
    _rotate(state_dir / HISTORY, keep)


def _rotate(path: Path, keep: int) -> None:
    """Keep the newest ``keep`` lines, written anew as the manifest is (luod.core.statedir:
    0600, an O_EXCL temporary, no symlink followed). The file is cut where its oldest kept
    line starts, never split into lines or read onto the heap: at every update's end, up to
    ~12 MB of history must not become a thousand objects (the heap they leave behind is luod's
    RSS; issue 13)."""
    with statedir.mapped(path) as data:
        spans = _spans(data, None)
        torn = bool(spans) and spans[-1][1] == len(data)  # a last line without its newline
        extra = len(spans) - torn - keep
        if extra <= 0:
            return
        with memoryview(data) as whole, whole[spans[extra][0] :] as kept:
            statedir.write_atomic(path, kept)


QUALIFICATION_MARK: Final = b'"kind": "qualification"'
"""How a qualification's line reads (json.dumps with sort_keys): no update record holds it, as
a quote inside a JSON string value is escaped."""


@contextlib.contextmanager
def history(state_dir: Path, kind: str | None = None) -> Iterator[HistoryLines]:
    """The history's lines, oldest first, found in place in the mapped file; with ``kind``
    ("update" or "qualification") only the lines of that kind. Up to HISTORY_KEEP records of
    up to ~12 KB (a request's paths and command line): a reader parses only what it needs
    (issue 13: a luod that parsed it all for every UPDATE and HISTORY grew by tens of MB), and
    nothing is copied but the lines it takes (reading the whole file for each request cost
    luod's main loop ~50 ms at 12 MB, and the heap as much). Use the lines inside the block."""
    with statedir.mapped(state_dir / HISTORY) as data:
        yield HistoryLines(data, _spans(data, kind))


class HistoryLines(Sequence[bytes]):
    """Lines of the history file as (start, end) spans over its bytes: a line is copied out
    only when it is indexed, and ``holds`` looks into one without copying it."""

    def __init__(self, data: mmap.mmap | bytes, spans: list[tuple[int, int]]) -> None:
        self._data = data
        self._spans = spans

    def __len__(self) -> int:
        return len(self._spans)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> HistoryLines: ...
    def __getitem__(self, index: int | slice) -> bytes | HistoryLines:
        if isinstance(index, slice):
            return HistoryLines(self._data, self._spans[index])
        start, end = self._spans[index]
        return self._data[start:end]

    def holds(self, index: int, needle: bytes) -> bool:
        start, end = self._spans[index]
        return self._data.find(needle, start, end) >= 0


def _spans(data: mmap.mmap | bytes, kind: str | None) -> list[tuple[int, int]]:
    """Where each line is (of ``kind``, if given), in one pass of C-level searches."""
    spans = []
    start, size = 0, len(data)
    while start < size:
        end = data.find(b"\n", start)
        end = size if end < 0 else end
        if kind is None or (data.find(QUALIFICATION_MARK, start, end) >= 0) == (
            kind == "qualification"
        ):
            spans.append((start, end))
        start = end + 1
    return spans


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One line's record; None for a line that is not a JSON object (a torn write)."""
    try:
        record = json.loads(line.decode(errors="replace"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_history(state_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    with history(state_dir, kind) as lines:
        records = (parse_line(line) for line in lines)
        return [record for record in records if record is not None]
