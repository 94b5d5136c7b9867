"""The history as the REST API reads it: one page parsed at a time, and the few facts per
ended update that the metrics count, kept while the file is unchanged.

Neither holds the whole history as models: 1000 records (HISTORY_KEEP) of requests with long
paths are ~11 MiB of models, which the REST API once kept as a snapshot, rebuilt on luod's
main loop (~0.1 s of it) after every update's end (issue 13's REST fuzz). Both read only the
history file (luod appends whole lines with one write), so the REST worker runs them in a
thread of its own, never on luod's loop."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luod.core import blackout_split, timeline
from luod.rest import models, records


@dataclass(frozen=True)
class Ended:
    """What /metrics counts of one ended update."""

    outcome: str
    reason_code: str
    blackout_seconds: dict[str, float | None]
    blackout_parts: dict[str, blackout_split.Parts]  # per VM stamped throughout, its parts
    phase_seconds: tuple[tuple[str, float], ...]  # (phase, seconds spent in it), in order


def page(state_dir: Path, kind: str, cursor: str | None, limit: int) -> models.History:
    """``limit`` entries of ``kind`` (update, qualification or all) older than ``cursor``,
    newest first; only their lines are parsed. The cursor is a line's index from the oldest
    (luod.rest.records): a torn line (not a JSON object) is skipped and shifts no cursor."""
    chosen: list[models.HistoryEntry] = []
    with timeline.history(state_dir, None if kind == "all" else kind) as lines:
        index = len(lines) if cursor is None else records.position(cursor, len(lines))
        while index > 0 and len(chosen) < limit:
            index -= 1
            entry = timeline.parse_line(lines[index])
            if entry is not None:
                chosen.append(records.history_entry(entry))
    return models.History(
        history=chosen, next_cursor=records.cursor_of(index) if index > 0 else None
    )


def ended(data: Mapping[str, Any]) -> Ended:
    """From an update's history line (``UpdateRecord.to_dict()``)."""
    outcome, reason = str(data.get("outcome", "running")), str(data.get("reason", ""))
    phases = [p for p in data.get("phases", []) if isinstance(p, Mapping)]
    spent = tuple(
        (str(entered.get("to")), max(_realtime(left) - _realtime(entered), 0.0))
        for entered, left in itertools.pairwise(phases)
    )
    return Ended(
        outcome=outcome,
        reason_code=str(records.reason_code(outcome, reason)),
        blackout_seconds=dict(data.get("blackout", {})),
        blackout_parts=blackout_split.split(data),
        phase_seconds=spent,
    )


def _realtime(transition: Mapping[str, Any]) -> float:
    at = transition.get("at")
    return float(at["realtime"]) if isinstance(at, Mapping) else 0.0


class EndedUpdates:
    """Every ended update's facts, newest first, read again only when the history file
    changed (its inode, size or mtime). Safe from any thread."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / timeline.HISTORY
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._facts: list[Ended] = []

    def read(self) -> list[Ended]:
        with self._lock:
            key = self._file_key()
            if key != self._key or key is None:
                self._facts = self._parse()
                self._key = key
            return self._facts

    def _file_key(self) -> tuple[int, int, int] | None:
        try:
            found = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return found.st_ino, found.st_size, found.st_mtime_ns

    def _parse(self) -> list[Ended]:
        facts = []
        with timeline.history(self.path.parent, "update") as lines:
            for line in reversed(lines):
                data = timeline.parse_line(line)
                if data is not None and data.get("kind", "update") == "update":
                    facts.append(ended(data))
        return facts
