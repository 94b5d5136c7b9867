"""What one fuzz run found: inputs, speed, crashes (by signature, with the input count of the
first hit and the input kept), hangs, tracebacks in luod's log, fds and RSS before and after."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY = "FUZZ-SUMMARY "  # the line a target prints last, JSON after it


@dataclass
class Crash:
    signature: str
    first_input: int
    count: int = 1
    message: str = ""
    artifact: str = ""


@dataclass
class Outcome:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    crashes: dict[str, Crash] = field(default_factory=dict)
    hangs: int = 0
    tracebacks: int = 0
    traceback_events: dict[str, int] = field(default_factory=dict)
    fds: tuple[int, int] | None = None  # before, after
    rss: tuple[int, int] | None = None  # bytes, before, after
    update_after: str = ""  # a well-behaved VMM's update afterwards: "completed", or what failed
    notes: list[str] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic, repr=False)

    def crash(
        self, exc: BaseException, data: bytes, artifacts: Path | None, signature: str = ""
    ) -> Crash:
        """Count a crash under its signature (by default the exception's type and innermost
        luod frame)."""
        signature = signature or signature_of(exc)
        known = self.crashes.get(signature)
        if known is not None:
            known.count += 1
            return known
        crash = Crash(signature, self.inputs, message=f"{type(exc).__name__}: {exc}"[:300])
        if artifacts is not None:
            artifacts.mkdir(parents=True, exist_ok=True)
            path = artifacts / f"crash-{self.target}-{hashlib.sha1(data).hexdigest()[:12]}"
            path.write_bytes(data)
            crash.artifact = str(path)
        self.crashes[signature] = crash
        return crash

    def traceback_seen(self, event: str) -> None:
        self.tracebacks += 1
        self.traceback_events[event] = self.traceback_events.get(event, 0) + 1

    def failures(self, rss_slack: int) -> list[str]:
        """What is wrong with this run: empty when it passed."""
        wrong = [f"{c.count} × {c.signature}: {c.message}" for c in self.crashes.values()]
        if self.hangs:
            wrong.append(f"{self.hangs} hangs")
        if self.tracebacks:
            wrong.append(f"{self.tracebacks} tracebacks in luod's log: {self.traceback_events}")
        if self.fds is None or self.fds[1] != self.fds[0]:
            wrong.append(f"luod's open fds before/after: {self.fds}")
        if self.rss is None or self.rss[1] > self.rss[0] + rss_slack:
            wrong.append(f"luod's RSS grew beyond {rss_slack >> 20} MiB: {self.rss}")
        if self.update_after not in ("", "completed"):
            wrong.append(f"a well-behaved update afterwards: {self.update_after}")
        return wrong

    def finish(self) -> Outcome:
        self.seconds = time.monotonic() - self._started
        return self

    @property
    def crash_count(self) -> int:
        return sum(c.count for c in self.crashes.values())

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data.pop("_started")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data: dict[str, Any] = json.loads(text)
        data["crashes"] = {k: Crash(**v) for k, v in data["crashes"].items()}
        for key in ("fds", "rss"):
            data[key] = tuple(data[key]) if data[key] is not None else None
        return cls(**data)


REPO = Path(__file__).resolve().parents[2]


def signature_of(exc: BaseException) -> str:
    """``Type at file:line`` of the innermost frame in luod's code (else the innermost of the
    repository's, else the innermost)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if Path(f.filename).is_relative_to(REPO / "luod")]
    ours = ours or [f for f in frames if Path(f.filename).is_relative_to(REPO)] or frames
    if not ours:
        return type(exc).__name__
    last = ours[-1]
    where = Path(last.filename)
    where = where.relative_to(REPO) if where.is_relative_to(REPO) else where
    return f"{type(exc).__name__} at {where}:{last.lineno} ({last.name})"


def scan_log(path: Path, outcome: Outcome) -> None:
    """Count the tracebacks in luod's JSON log: lines with an ``exception`` (structlog's
    format_exc_info), and any non-JSON line of a Python traceback (a crash's stderr)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                if line.startswith("Traceback (most recent call last)"):
                    outcome.traceback_seen("(not JSON)")
                continue
            if isinstance(entry, dict) and "exception" in entry:
                outcome.traceback_seen(str(entry.get("event")))


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
