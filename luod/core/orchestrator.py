"""The update state machine, as data: phases, a transition table, a deadline per phase.

Pure: no I/O, no sleeping. The driver (luod/daemon/update.py) performs the steps and asks this
machine for permission to move; every move is emitted as an event with its reason and time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, NamedTuple

from luod.core.clock import Clock, Stamp
from luod.errors import LuodError
from luod.values import Value


class Phase(StrEnum):
    IDLE = "idle"
    PREPARING = "preparing"
    PREPARED = "prepared"
    FREEZING = "freezing"
    FROZEN = "frozen"
    REBOOTING = "rebooting"
    RECLAIMING = "reclaiming"
    ABORTING = "aborting"


P = Phase
TRANSITIONS: Final[Mapping[Phase, frozenset[Phase]]] = {
    P.IDLE: frozenset({P.PREPARING, P.RECLAIMING}),
    P.PREPARING: frozenset({P.PREPARED, P.ABORTING}),
    P.PREPARED: frozenset({P.FREEZING, P.ABORTING}),
    P.FREEZING: frozenset({P.FROZEN, P.ABORTING}),
    P.FROZEN: frozenset({P.REBOOTING, P.ABORTING}),
    P.REBOOTING: frozenset({P.PREPARED}),  # reboot(2) failed: the kernel rolled back
    P.RECLAIMING: frozenset({P.IDLE}),
    P.ABORTING: frozenset({P.IDLE, P.PREPARED}),
}
"""ABORTING is reachable from every phase before REBOOTING, and from nowhere after it."""

DEFAULT_DEADLINES: Final[Mapping[Phase, float | None]] = {
    P.IDLE: None,
    P.PREPARING: 600.0,  # preserving is linear in size (docs/kernel.md §6.2)
    P.PREPARED: None,  # waits for the operator's freeze
    P.FREEZING: 10.0,  # every VMM pauses and answers READY
    P.FROZEN: 30.0,
    P.REBOOTING: None,
    P.RECLAIMING: 600.0,  # grace period before unreclaimed VMs are reported
    P.ABORTING: 30.0,
}

DEADLINE_PHASES: Final = ("preparing", "freezing", "frozen", "reclaiming", "aborting")
"""The phases whose deadline a request may set (the others wait for an operator or a reboot)."""
MAX_DEADLINE: Final = 7 * 24 * 3600.0

# Phases where a SIGTERM/SIGINT must wait: stopping there would leave a half-done update.
SIGNAL_DEFERRING: Final = frozenset({P.FREEZING, P.FROZEN, P.REBOOTING})


class _Transition(NamedTuple):
    source: Phase
    target: Phase
    reason: str
    at: Stamp


class Transition(Value, _Transition):
    __slots__ = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "from": str(self.source),
            "to": str(self.target),
            "reason": self.reason,
            "at": self.at.to_dict(),
        }


@dataclass
class UpdateMachine:
    clock: Clock
    emit: Callable[[Transition], None] = lambda _: None
    deadlines: Mapping[Phase, float | None] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    phase: Phase = Phase.IDLE
    history: list[Transition] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.entered = self.clock.now()

    def can(self, target: Phase) -> bool:
        return target in TRANSITIONS[self.phase]

    def go(self, target: Phase, reason: str) -> Transition:
        if not self.can(target):
            raise LuodError(
                "wrong-state",
                f"cannot go from {self.phase} to {target}",
                f"from {self.phase} luod may go to: "
                + (", ".join(sorted(TRANSITIONS[self.phase])) or "nothing"),
            )
        transition = Transition(self.phase, target, reason, self.clock.now())
        self.phase, self.entered = target, transition.at
        self.history.append(transition)
        self.emit(transition)
        return transition

    def deadline(self) -> float | None:
        """Monotonic time by which the current phase must be left, if it has a deadline."""
        limit = self.deadlines.get(self.phase)
        return None if limit is None else self.entered.monotonic + limit

    def remaining(self) -> float | None:
        deadline = self.deadline()
        return None if deadline is None else max(0.0, deadline - self.clock.now().monotonic)

    @property
    def defers_signals(self) -> bool:
        return self.phase in SIGNAL_DEFERRING

    @property
    def abortable(self) -> bool:
        return Phase.ABORTING in TRANSITIONS[self.phase]
