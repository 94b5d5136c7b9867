"""The handoff's last line carries the update record (issue 17): its text is composed from each
VM's steps as they were encoded while the READY barrier waited, and it is byte for byte what one
``json.dumps`` of the whole wrote before (a luod of the previous version reads it unchanged), for
any record: odd ids, odd floats, VMs without steps, an aborted update, a record read back."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from luod.core import jsontext, manifest, timeline
from luod.core.clock import Stamp
from luod.core.timeline import UpdateRecord
from luod.daemon.update import UpdateRequest
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


def test_a_record_composed_from_steps_encoded_ahead_is_what_json_dumps_writes() -> None:
    record = odd_record()
    assert record.to_json() == before(record.to_dict())  # nothing encoded ahead
    record = odd_record()
    record.encode_steps(ODD_IDS[:5])  # some ahead, then steps again, some of them re-stamped
    record.vm_event("vm1", "freeze_ack", Stamp(1.0, 1e-7, 2.0))
    record.vm_event("vm1", "freeze_sent", Stamp(1.5, 1e-8, 2.5))
    record.vm_event("new", "freeze_sent", Stamp(3.0, 4.0, 5e-7))
    assert record.to_json() == before(record.to_dict())
    record.vm_event('quo"te', "reclaimed", Stamp(6.0, 7.0, 8.0))  # after to_json, a step
    data = record.to_dict()
    assert record.to_json(data) == before(data)


def test_a_record_read_back_is_composed_as_json_dumps_writes_it() -> None:
    data = json.loads(before(odd_record().to_dict()))
    assert UpdateRecord.from_dict(data).to_json() == before(UpdateRecord.from_dict(data).to_dict())
    empty = UpdateRecord()
    assert empty.to_json() == before(empty.to_dict())


def test_the_kexec_line_with_the_record_given_as_text_is_the_line_it_was() -> None:
    record = odd_record()
    extra: dict[str, object] = {"update": record.to_dict(), "qualification": None, "é": [1e-7]}
    line = manifest.kexec_line(extra, {"update": record.to_json()})
    assert line == (before({"kexec": {"extra": extra}}) + "\n").encode()
    assert line == manifest.journal_line({"kexec": {"extra": extra}})
    assert manifest.kexec_line({}, {}) == b'{"kexec":{"extra":{}}}\n'


def test_begin_kexec_writes_the_carried_text_and_the_next_luod_reads_the_record(
    world: World,
) -> None:
    preserve(world.registry, "vm1", ram0=b"guest")
    record = odd_record(TIMES)
    world.registry.carry("update", {"stale": True}, "{}")
    world.registry.carry("update", record.to_dict())  # a value without text drops the old text
    world.registry.stage_kexec()
    world.registry.carry("update", record.to_dict(), record.to_json())
    world.registry.carry("qualification", {"step": 2})
    world.registry.begin_kexec()
    journal = (world.registry.state_dir / manifest.JOURNAL).read_bytes()
    extra = {"update": record.to_dict(), "qualification": {"step": 2}}
    assert (
        journal.splitlines(keepends=True)[-1]
        == (before({"kexec": {"extra": extra}}) + "\n").encode()
    )
    on_disk_now = manifest.read_disk(world.registry.state_dir)
    assert on_disk_now is not None and on_disk_now.kexec_pending
    assert on_disk_now.extra == json.loads(before(extra))
    world.registry.end_kexec()


def test_after_the_last_ready_only_its_vm_is_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps of VMs whose READY came while the barrier waited were encoded then: after the
    last READY the encoder does not run over them again (before: over every VM's, inside every
    VM's pause: 5-8 ms at 1000 VMs on a host)."""
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
    acks = {vm: dumps(record.vms[vm]["freeze_ack"]) for vm in ("vm1", "vm2", "vm3")}
    assert [vm for vm, ack in acks.items() if any(ack in text for text in encoded)] == ["vm3"]
    line = (luod.state / manifest.JOURNAL).read_bytes().splitlines()[-1]
    carried = json.loads(line)["kexec"]["extra"]["update"]
    assert all(carried["vms"][vm]["freeze_ack"] == json.loads(ack) for vm, ack in acks.items())
    assert timeline.UpdateRecord.from_dict(carried).vms == record.vms
