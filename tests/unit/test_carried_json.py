"""The handoff's last line carries the update record (issue 17): the record as it was staged
before the freeze, encoded then, and its change lines since, each encoded once as the running
record appended it. Inside every VM's pause only the lines after the last wait are encoded. The
line is byte for byte ``journal_line`` of its entry, and the next luod reads the record as it
was at the reboot, for any record: odd ids, odd floats, VMs without steps, an aborted update.
A luod that knows no change lines reads the record as staged."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luod.core import jsontext, manifest, record_lines
from luod.core.clock import Stamp, SystemClock
from luod.core.orchestrator import Phase, Transition
from luod.core.timeline import UpdateRecord
from luod.daemon.events import EventBus
from luod.daemon.update import UpdateRequest
from luod.daemon.update_log import UpdateLog
from tests.rest.harness import Luod, until
from tests.unit.test_core import World, preserve
from tests.unit.test_freeze_on_disk import on_disk

ODD_IDS = (
    "vm1",
    "VM-2.a_b",  # what api/vmm-protocol.md §7 allows; the rest it does not, json still must
    'quo"te',
    "back\\slash",
    "tab\tnew\nline\x00",
    "ünïcödé",
    "emoji \U0001f600",
    "\u2028\u2029",
    "",
    "a",
    "A",
    "a0",
)
TIMES = (1e-7, -0.0, 0.1 + 0.2, 1765000000.123456, 5e-324, 81234.000001)
"""Odd, but times the manifest's reader takes (luod.core.manifest_check)."""
ODD_FLOATS = (*TIMES, 1.5e300, 2**53 + 1.0, -1e-310)
STAMP = Stamp(1.0, 2.0, 3.0).to_dict()


def before(value: Any) -> str:
    """How the kexec line was written before (luod.core.manifest.journal_line), spelled here."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def odd_record(floats: tuple[float, ...] = ODD_FLOATS) -> UpdateRecord:
    """Every id stepped; some aborted (resumed), some done, a late READY after its resume."""

    def stamp(i: int) -> Stamp:
        return Stamp(1765000000.0 + i * 1e-3, floats[i % len(floats)], 81234.5 + i)

    record = UpdateRecord(request={"kernel": "/boot/vmlinuz-ü", "cmdline": 'a="b c"', "n": 3})
    record.phase({"from": "idle", "to": "preparing", "reason": "ünï", "at": stamp(0).to_dict()})
    for i, vm in enumerate(ODD_IDS):
        record.vm_event(vm, "freeze_sent", stamp(i))
    for i, vm in enumerate(ODD_IDS[::2]):
        record.vm_event(vm, "freeze_ack", stamp(100 + i))
    record.vm_event("a", "resumed", stamp(7))
    record.vm_event("a", "freeze_ack", stamp(8))  # late, after the resume
    record.vm_event("A", "done", stamp(9))
    record.vms["no steps"] = {}  # as a record read back may hold
    record.event("kernel_boot", Stamp(1.0, 2.0, 3e-7))
    record.outcome, record.reason, record.aborted_by = "aborted", "deadline: vm\u00e9", "uid 0"
    return record


def staged_and_after() -> tuple[UpdateRecord, list[bytes], UpdateRecord]:
    """``odd_record``, staged half way: the record then (as read back), the change lines of the
    steps and phases after it (some of them stamped again), and the record at the end."""
    final = odd_record(TIMES)
    staged = UpdateRecord.from_dict(json.loads(before(final.to_dict())))
    lines: list[bytes] = []
    for i, vm in enumerate(ODD_IDS):
        steps = [(vm, "freeze_ack", Stamp(1765000001.0 + i, TIMES[i % len(TIMES)], 2.5 + i))]
        if i % 3 == 0:
            steps.append((vm, "freeze_sent", Stamp(3.0, 4.0, 5e-7)))  # stamped again
        for name_vm, name, at in steps:
            final.vm_event(name_vm, name, at)
        phase = {"from": "a", "to": f"ü{i}", "reason": "", "at": Stamp(1.0, 2.0, 3.0).to_dict()}
        if i % 4 == 0:
            final.phase(phase)
        lines.append(record_lines.encode(phase if i % 4 == 0 else None, steps))
    lines.append(record_lines.encode(None, []))  # a flush with nothing new
    return staged, lines, final


def read_back(data: dict[str, Any]) -> dict[str, Any]:
    """A carried record as the next luod's UpdateLog takes it (``blackout`` is computed)."""
    return UpdateRecord.from_dict(data).to_dict()


def test_the_kexec_line_is_the_journal_line_of_its_entry() -> None:
    record = odd_record()
    staged_text = before(record.to_dict()).encode()
    lines = [record_lines.encode(None, [("vm1", "freeze_ack", Stamp(1.0, -0.0, 5e-324))])]
    lines.append(record_lines.encode({"to": "rebooting", "reason": "ünï"}, []))
    extra: dict[str, object] = {"update": record.to_dict(), "qualification": None, "é": [1e-7]}
    line = manifest.kexec_line(extra, {"update": staged_text}, lines)
    entry = {"kexec": {"extra": extra, "update_lines": [json.loads(text) for text in lines]}}
    assert line == (before(entry) + "\n").encode() == manifest.journal_line(entry)
    # without change lines, the line is what it was before them, and what older luods wrote
    assert manifest.kexec_line(extra, {"update": staged_text}) == manifest.journal_line(
        {"kexec": {"extra": extra}}
    )
    assert manifest.kexec_line({}, {}) == b'{"kexec":{"extra":{}}}\n'


def test_the_next_luod_reads_the_record_as_it_was_at_the_reboot(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"guest")
    staged, lines, final = staged_and_after()
    world.registry.carry("update", {"stale": True}, "{}")
    world.registry.carry_update_lines([b'{"steps":[["stale","x",{}]]}'])
    world.registry.carry("update", staged.to_dict(), before(staged.to_dict()))  # drops both
    world.registry.stage_kexec()
    world.registry.carry_update_lines(lines)
    world.registry.carry("qualification", {"step": 2})
    world.registry.begin_kexec()
    last = (world.registry.state_dir / manifest.JOURNAL).read_bytes().splitlines()[-1]
    kexec = json.loads(last)["kexec"]
    assert kexec["extra"]["update"] == json.loads(before(staged.to_dict()))  # as staged
    on_disk_now = manifest.read_disk(world.registry.state_dir)
    assert on_disk_now is not None and on_disk_now.kexec_pending
    assert read_back(on_disk_now.extra["update"]) == json.loads(before(final.to_dict()))
    assert on_disk_now.extra["qualification"] == {"step": 2}
    world.registry.end_kexec()


def test_a_kexec_line_of_a_luod_before_the_change_lines_reads_as_it_did() -> None:
    record = odd_record(TIMES)
    line = manifest.journal_line({"kexec": {"extra": {"update": record.to_dict()}}})
    replayed = manifest.replay(manifest.Manifest("b", "r", 1), line)
    assert replayed.kexec_pending
    assert replayed.extra["update"] == json.loads(before(record.to_dict()))


@pytest.mark.parametrize(
    ("lines", "vms"),
    [
        ([1, "x", None, [], {"steps": 3}, {"steps": [[1, 2]]}], {"vm1"}),  # nothing applied
        ([{"steps": [["vm2", 7, {}], [None, "x", {}], ["vm3", "x", []]]}], {"vm1"}),
        ([{"steps": [], "phase": "frozen"}], {"vm1"}),  # a phase that is no transition
        ([{"steps": [["vm2", "freeze_ack", STAMP]]}], {"vm1", "vm2"}),
    ],
)
def test_change_lines_that_are_not_lines_change_nothing(lines: list[Any], vms: set[str]) -> None:
    record = {"id": "u1", "phases": [], "vms": {"vm1": {}}}
    line = manifest.journal_line({"kexec": {"extra": {"update": record}, "update_lines": lines}})
    replayed = manifest.replay(manifest.Manifest("b", "r", 1), line)
    assert replayed.kexec_pending and set(replayed.extra["update"]["vms"]) == vms
    assert replayed.extra["update"]["phases"] == []


def test_a_change_line_with_a_stamp_that_is_not_one_makes_the_kexec_line_corrupt() -> None:
    """The change lines are checked as the record is (luod.core.manifest_check): a hostile line
    cannot smuggle what a record may not hold."""
    record = {"id": "u1", "vms": {}}
    bad = [{"steps": [["vm1", "freeze_ack", {"realtime": "soon"}]]}]
    line = manifest.journal_line({"kexec": {"extra": {"update": record}, "update_lines": bad}})
    replayed = manifest.replay(manifest.Manifest("b", "r", 1), line)
    assert not replayed.kexec_pending and replayed.extra == {}


def test_after_the_last_ready_only_its_step_is_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps of VMs whose READY came while the barrier waited were encoded then, in the
    running record's lines, which the kexec line carries as they are: after the last READY the
    encoder does not run over them again, nor over the record staged before the freeze
    (before: over every VM's steps, inside every VM's pause: 5-8 ms at 1000 VMs on a host)."""
    encoded: list[str] = []
    dumps = jsontext.dumps

    def counting(value: object) -> str:
        encoded.append(text := dumps(value))
        return text

    async def scenario() -> None:
        vmms = {vm: await luod.handover_vm(vm) for vm in ("vm1", "vm2", "vm3")}
        luod.driver.start(UpdateRequest(luod.kernel))
        await until(lambda: all(vmm.events("FREEZE") for vmm in vmms.values()))
        for vm in ("vm1", "vm2"):
            assert (await luod.ask(vmms[vm], {"cmd": "READY", "id": vm}))["ok"]
            await until(functools.partial(on_disk, luod.state, (vm, "freeze_ack")))
        monkeypatch.setattr(jsontext, "dumps", counting)
        assert (await luod.ask(vmms["vm3"], {"cmd": "READY", "id": "vm3"}))["ok"]
        await until(lambda: luod.kexeced)

    luod = Luod(tmp_path / "luod")
    try:
        asyncio.run(scenario())
    finally:
        luod.close()
    record = luod.driver.log.record
    assert record is not None
    stamps = {vm: dumps(steps["freeze_sent"]) for vm, steps in record.vms.items()}
    stamps |= {vm + " ack": dumps(record.vms[vm]["freeze_ack"]) for vm in ("vm1", "vm2", "vm3")}
    assert [vm for vm, stamp in stamps.items() if any(stamp in text for text in encoded)] == [
        "vm3 ack"
    ]
    handed_over = manifest.read_disk(luod.state)
    assert handed_over is not None and handed_over.kexec_pending
    assert read_back(handed_over.extra["update"]) == json.loads(before(record.to_dict()))
    assert [p["to"] for p in handed_over.extra["update"]["phases"]][-3:] == [
        "freezing",
        "frozen",
        "rebooting",
    ]


def test_a_record_written_whole_after_staging_is_carried_whole(tmp_path: Path) -> None:
    """Change lines since the staging say everything only while nothing wrote the record whole:
    a transition that does (one before the sync, as an abort's) ends them, and the kexec step
    then carries the whole record, encoded there (the line an older luod wrote)."""
    log = UpdateLog(SystemClock(), EventBus(), tmp_path)
    log.open({"kernel": "/boot/k"})
    now = SystemClock().now()
    staged, text = log.stage()
    assert json.loads(text)["phases"] == [] and log.since_staged() == []
    log.phase(Transition(Phase.PREPARED, Phase.FREEZING, "freeze", now))
    log.stamp("vm1", "freeze_sent")
    log.flush()
    lines = log.since_staged()
    assert lines is not None and len(lines) == 2
    assert staged == json.loads(text)  # a copy: the record's later steps are in the lines only
    assert [json.loads(line).get("phase", {}).get("to") for line in lines] == ["freezing", None]
    log.phase(Transition(Phase.FREEZING, Phase.ABORTING, "deadline", now))
    assert log.since_staged() is None
    log.close()


def test_the_snapshot_with_the_record_encoded_ahead_is_the_same_bytes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staged snapshot takes the record's text the kexec line takes, instead of encoding
    the record a second time, and writes the bytes one ``json.dumps`` of it writes."""
    preserve(world.registry, "vm1", ram0=b"guest")
    record = odd_record(TIMES)
    snapshot = manifest.Manifest(
        "boot", "7.2.13", 3, extra={"update": record.to_dict(), "qualification": {"step": 1}}
    )
    staged_text = before(record.to_dict()).encode()
    assert snapshot.to_json({"update": staged_text}) == snapshot.to_json()
    empty = manifest.Manifest("b", "r", 0)
    assert empty.to_json({"update": b"{}"}) == empty.to_json()  # nothing carried: not used
    encoded: list[str] = []
    dumps = jsontext.dumps

    def counting(value: object) -> str:
        encoded.append(text := dumps(value))
        return text

    world.registry.carry("update", record.to_dict(), before(record.to_dict()))
    monkeypatch.setattr(jsontext, "dumps", counting)
    world.registry.stage_kexec()
    assert not [text for text in encoded if '"freeze_sent"' in text]  # the record: not again
    on_disk_now = manifest.read_disk(world.registry.state_dir)
    assert on_disk_now is not None and on_disk_now.extra["update"] == json.loads(
        before(record.to_dict())
    )
    world.registry.end_kexec()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_STAMPS = (
    st.fixed_dictionaries(
        {"realtime": st.floats(), "monotonic": st.floats(), "boottime": st.floats()}
    )
    | _JSON
)
_STEPS = st.lists(
    st.tuples(st.text(max_size=6), st.text(max_size=12), _STAMPS).map(list), max_size=4
)
_LINES = st.lists(
    st.fixed_dictionaries({"steps": _STEPS}, optional={"phase": _JSON}) | _JSON, max_size=6
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=_LINES, vms=st.dictionaries(st.text(max_size=6), _JSON, max_size=3))
def test_whatever_the_change_lines_hold_the_next_luod_takes_the_record_or_none(
    lines: list[Any], vms: dict[str, Any]
) -> None:
    """A kexec line from another luod or a damaged disk: the reader takes the carried record
    with its change lines applied, or the line not at all (``kexec_pending`` stays false), and
    what it takes the next luod's update log reads without an exception."""
    record = {"id": "u1", "phases": [], "vms": vms}
    line = manifest.journal_line({"kexec": {"extra": {"update": record}, "update_lines": lines}})
    replayed = manifest.replay(manifest.Manifest("b", "r", 1), line)
    if replayed.kexec_pending:
        taken = UpdateRecord.from_dict(replayed.extra["update"])
        assert set(taken.vms) >= {vm for vm, steps in vms.items() if isinstance(steps, dict)}
    else:
        assert replayed.extra == {}
