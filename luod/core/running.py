"""The running update's record on disk (STATE_DIR/update-running.json), rewritten at every
phase transition and removed when the update ends. Where rewriting the whole record costs too
much, what changed since it was written is appended as one line instead: each VM's reclaim step
(a rewrite per step costs O(VMs), O(VMs²) per update: 13 ms a step at 1000 VMs), and the
transitions after the sync before FREEZE, with the freeze acks (bench/NOTES.md; the lines:
luod.core.record_lines). A luod killed in the middle of an update reads it when it starts again
and ends or continues that update (docs/operations.md §8.13): before the reboot it ends as
aborted (every VMM is owed a RESUME); in ``reclaiming`` it goes on; after a boot that did not
come through the live update it ends as failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, NamedTuple

from luod.core import record_lines, statedir
from luod.core.clock import Stamp
from luod.core.orchestrator import Phase
from luod.core.timeline import UpdateRecord
from luod.values import Value

RUNNING: Final = "update-running.json"


class _Interrupted(NamedTuple):
    record: UpdateRecord
    phase: Phase
    same_boot: bool


class Interrupted(Value, _Interrupted):
    """An update a previous luod did not end: its record, the phase it was in, and whether
    that luod ran in this boot."""

    __slots__ = ()

    def entered(self) -> Stamp | None:
        """When the record last entered ``phase`` (monotonic: valid in its own boot only)."""
        for transition in reversed(self.record.phases):
            if transition.get("to") == self.phase and isinstance(transition.get("at"), dict):
                return Stamp(**transition["at"])
        return None


def write(state_dir: Path, record: UpdateRecord, boot_id: str) -> None:
    """Replace the file atomically: a crash leaves the old record or the new one (0600, no
    symlink followed: luod.core.statedir)."""
    data = json.dumps({"boot_id": boot_id, "record": record.to_dict()}) + "\n"
    statedir.write_atomic(state_dir / RUNNING, data.encode())


def appender(state_dir: Path) -> statedir.AppendFile:
    """The record's file, kept open for ``append`` (its owner closes it)."""
    return statedir.AppendFile(state_dir / RUNNING)


def append(out: statedir.AppendFile, line: bytes) -> None:
    """A change line (luod.core.record_lines.encode: the VMs' steps since the record was
    written, and a phase transition if one) to ``out`` (``appender``)."""
    out.write(line + b"\n")


def clear(state_dir: Path) -> None:
    statedir.unlink(state_dir / RUNNING)


def read(state_dir: Path, boot_id: str) -> Interrupted | None:
    """The update a previous luod left running, or None (no file, or one luod cannot read)."""
    try:
        raw = statedir.read(state_dir / RUNNING)
        if raw is None:
            return None
        first, *lines = raw.decode().split("\n")
        data: dict[str, Any] = json.loads(first)
        record = UpdateRecord.from_dict(data["record"])
        for line in lines:
            _replay(record, line)
        phases = record.phases
        phase = Phase(phases[-1]["to"]) if phases else Phase.PREPARING
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Interrupted(record, phase, data.get("boot_id") == boot_id)


def _replay(record: UpdateRecord, line: str) -> None:
    """A line ``append`` wrote; a torn or malformed one (a luod killed mid-write) is skipped."""
    try:
        data = json.loads(line)
    except ValueError:
        return
    record_lines.apply(record.vms, record.phases, data)
