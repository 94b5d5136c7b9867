"""luod.core.dialect: what an update does with each VM, by the dialect its VMM speaks; and the
preflight's pause check built on it. Pure functions, no I/O."""

from __future__ import annotations

import pytest

from luod.core import dialect, preflight
from luod.core.dialect import Action
from luod.core.model import FileRecord, Mode, Owner, VmRecord, VmState
from luod.kernel.probes import KernelInfo

pytestmark = pytest.mark.unit
LUOD = frozenset(dialect.ALL)
LUO_AGENT: frozenset[str] = frozenset()


def test_luod_grants_the_capabilities_it_knows_and_ignores_the_others() -> None:
    assert dialect.grant(["freeze", "teleport", "progress"]) == {"freeze", "progress"}
    assert dialect.grant(None) == dialect.grant([]) == frozenset()
    assert {str(c) for c in dialect.ALL} == {"freeze", "resume", "progress", "done"}


@pytest.mark.parametrize(
    ("event", "granted", "sent"),
    [
        ("START_PRESERVATION", LUO_AGENT, True),  # luo-agent's own event
        ("FREEZE", LUO_AGENT, False),
        ("RESUME", LUO_AGENT, False),
        ("PHASE", LUO_AGENT, False),
        ("VM_PROGRESS", {"freeze", "resume"}, False),
        ("UPDATE_END", {"progress"}, True),
        ("FREEZE", {"freeze"}, True),
        ("RESUME", {"resume"}, True),
    ],
)
def test_extension_events_go_only_where_they_were_asked_for(
    event: str, granted: frozenset[str], sent: bool
) -> None:
    assert dialect.may_send(event, granted) is sent


def test_luo_agents_claim_ends_custody_and_luods_waits_for_done() -> None:
    assert dialect.claim_ends_custody(LUO_AGENT)
    assert dialect.claim_ends_custody({"freeze", "resume", "progress"})
    assert not dialect.claim_ends_custody({"done"})


BARRIERS = [
    # event, mode, granted (None: no VMM connected), preserve acked -> action, note contains
    ("START_PRESERVATION", Mode.DELEGATION, LUO_AGENT, False, Action.SEND, ""),
    ("START_PRESERVATION", Mode.DELEGATION, None, False, Action.COUNT, "carried as it is"),
    ("FREEZE", Mode.HANDOVER, LUOD, False, Action.SEND, ""),
    ("FREEZE", Mode.DELEGATION, LUOD, True, Action.SEND, ""),
    ("FREEZE", Mode.HANDOVER, None, False, Action.COUNT, "nothing to pause"),
    ("FREEZE", Mode.DELEGATION, LUO_AGENT, True, Action.COUNT, "ready for the kexec"),
    ("FREEZE", Mode.DELEGATION, LUO_AGENT, False, Action.REFUSE, "no READY"),
    ("FREEZE", Mode.HANDOVER, LUO_AGENT, True, Action.REFUSE, "cannot pause"),
    ("FREEZE", Mode.HANDOVER, {"resume", "progress"}, False, Action.REFUSE, "'freeze'"),
]


@pytest.mark.parametrize(("event", "mode", "granted", "acked", "action", "note"), BARRIERS)
def test_barrier_step(
    event: str,
    mode: Mode,
    granted: frozenset[str] | None,
    acked: bool,
    action: Action,
    note: str,
) -> None:
    step = dialect.barrier_step(event, mode, granted, acked)
    assert step.action is action and note in step.note
    trusted = action is Action.COUNT and granted is not None  # connected, yet not asked
    assert step.record == ("freeze_trusted" if trusted else "")


def vm(vm_id: str, mode: Mode, state: VmState = VmState.PRESERVED) -> VmRecord:
    record = VmRecord(vm_id, Owner(0, 0, 1), mode, state)
    if mode is Mode.HANDOVER:
        record.files["ram0"] = FileRecord("ram0", 1, "memfd", 4096)
    return record


def test_preflight_passes_when_every_vmm_negotiated_freeze_or_is_gone() -> None:
    vms = [vm("a", Mode.HANDOVER), vm("b", Mode.DELEGATION), vm("c", Mode.HANDOVER)]
    check = preflight.pausable(vms, {"a": LUOD, "b": LUOD})
    assert check.status is preflight.Status.PASS


def test_preflight_warns_that_luo_agent_vms_count_as_paused_without_freeze() -> None:
    check = preflight.pausable([vm("agent", Mode.DELEGATION)], {"agent": LUO_AGENT})
    assert check.status is preflight.Status.WARN
    assert "agent" in check.message and "counts as paused" in check.hint


def test_preflight_refuses_a_handover_vm_whose_connected_vmm_cannot_be_paused() -> None:
    vms = [vm("raw", Mode.HANDOVER), vm("agent", Mode.DELEGATION)]
    check = preflight.pausable(vms, {"raw": LUO_AGENT, "agent": LUO_AGENT})
    assert check.status is preflight.Status.FAIL
    assert "raw (its VMM is connected but did not ask for FREEZE" in check.message
    assert "agent" not in check.message and "freeze" in check.hint


def test_preflight_ignores_lost_vms_for_the_pause() -> None:
    lost = vm("gone", Mode.HANDOVER, VmState.LOST)
    assert preflight.pausable([lost], {"gone": LUO_AGENT}).status is preflight.Status.PASS


def test_the_pause_check_is_part_of_every_preflight() -> None:
    info = KernelInfo("7.2.13", True, "liveupdate=on kho=on", True, True, 0, None, 0)
    vms = [vm("raw", Mode.HANDOVER)]
    ctx = preflight.PreflightInput(info, vms, None, info.cmdline, vmms={"raw": LUO_AGENT})
    (pause,) = [c for c in preflight.run(ctx) if c.id == "pause"]
    assert pause.status is preflight.Status.FAIL
    assert pause in preflight.failed(preflight.run(ctx))
