"""The update state machine: every legal transition, every illegal one, deadlines."""

from __future__ import annotations

import itertools

import pytest

from luod.core.clock import FakeClock
from luod.core.orchestrator import TRANSITIONS, Phase, Transition, UpdateMachine
from luod.errors import LuodError

LEGAL = [(s, t) for s, targets in TRANSITIONS.items() for t in sorted(targets)]
ILLEGAL = [(s, t) for s, t in itertools.product(Phase, Phase) if t not in TRANSITIONS[s]]


def machine_in(phase: Phase, clock: FakeClock | None = None) -> UpdateMachine:
    machine = UpdateMachine(clock or FakeClock())
    machine.phase = phase
    return machine


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{s}->{t}" for s, t in LEGAL])
def test_legal_transition_is_emitted_with_reason_and_time(source: Phase, target: Phase) -> None:
    clock = FakeClock()
    seen: list[Transition] = []
    machine = UpdateMachine(clock, emit=seen.append)
    machine.phase = source
    clock.advance(5)
    machine.go(target, "because")
    assert machine.phase is target
    assert seen == [Transition(source, target, "because", clock.now())]


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{s}->{t}" for s, t in ILLEGAL])
def test_illegal_transition_is_refused_and_changes_nothing(source: Phase, target: Phase) -> None:
    machine = machine_in(source)
    with pytest.raises(LuodError) as info:
        machine.go(target, "no")
    assert info.value.code == "wrong-state" and machine.phase is source and not machine.history


def test_abort_is_possible_before_rebooting_and_never_after() -> None:
    before = [Phase.PREPARING, Phase.PREPARED, Phase.FREEZING, Phase.FROZEN]
    assert all(machine_in(p).abortable for p in before)
    assert not any(machine_in(p).abortable for p in (Phase.REBOOTING, Phase.RECLAIMING))


def test_freezing_deadline_expires_on_the_clock() -> None:
    clock = FakeClock()
    machine = UpdateMachine(clock, deadlines={Phase.FREEZING: 10.0})
    machine.phase = Phase.PREPARED
    machine.go(Phase.FREEZING, "operator")
    clock.advance(9.5)
    assert machine.remaining() == pytest.approx(0.5)
    clock.advance(0.5)
    assert machine.remaining() == 0.0


def test_phase_without_deadline_never_expires() -> None:
    clock = FakeClock()
    machine = machine_in(Phase.PREPARED, clock)
    clock.advance(1e9)
    assert machine.deadline() is None and machine.remaining() is None


def test_signals_are_deferred_only_while_freezing_frozen_or_rebooting() -> None:
    deferring = {p for p in Phase if machine_in(p).defers_signals}
    assert deferring == {Phase.FREEZING, Phase.FROZEN, Phase.REBOOTING}


def test_a_full_update_walks_the_documented_path() -> None:
    machine = UpdateMachine(FakeClock())
    path = [Phase.PREPARING, Phase.PREPARED, Phase.FREEZING, Phase.FROZEN, Phase.REBOOTING]
    for phase in path:
        machine.go(phase, "step")
    assert [t.target for t in machine.history] == path
