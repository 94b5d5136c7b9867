"""The handoff in two steps (issue 17): the snapshot before the freeze, only what changed after
the last READY. Whatever the next kernel's luod reads (token 0 and 1 of session ``luod``, token
0 alone as a luod that knows no token 1 does, or the disk copy), it finds every VM, and the
update's record as carried last."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from luod.core import handoff, holds, manifest, running, timeline
from luod.core import registry as registry_module
from luod.core.model import (
    HANDOFF_JOURNAL_TOKEN,
    MANIFEST_TOKEN,
    STATE_SESSION,
    FileSpec,
    Mode,
    VmState,
)
from luod.core.orchestrator import Phase
from luod.daemon.update import UpdateRequest
from luod.kernel import memfd
from luod.kernel.session import Session
from luod.kernel.sim import SimulatedKexec
from tests.contract.harness import FAKE_BZIMAGE
from tests.rest.harness import Luod, until
from tests.unit.test_core import ROOT, World, preserve, ram
from tests.unit.test_restart_mid_update import Restarted, kill_during_update


def _load(world: World, tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    handoff.load_next_kernel(world.backend, image, None, None)


def _next_boot(world: World, tmp_path: Path) -> World:
    return World.boot(tmp_path / "kernel", world.registry.state_dir)


def test_after_the_last_ready_no_snapshot_is_serialized(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.stage_kexec()

    def serialized(_: manifest.Manifest) -> bytes:
        raise AssertionError("the whole manifest serialized inside the VMs' pause")

    monkeypatch.setattr(manifest.Manifest, "to_json", serialized)
    world.registry.carry("update", {"id": "u1"})
    world.registry.begin_kexec()
    assert world.registry.kexec_pending


def test_what_changed_during_the_freeze_comes_through_token_1(world: World, tmp_path: Path) -> None:
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.register(ROOT, "vm2", Mode.DELEGATION)
    world.registry.carry("qualification", {"step": 1})
    world.registry.stage_kexec()
    world.registry.mark_ready(ROOT, "vm2")  # a delegated VM's READY to FREEZE is recorded
    world.registry.carry("qualification", {"step": 2})  # the record as it is at the reboot
    _load(world, tmp_path)
    with pytest.raises(SimulatedKexec):
        handoff.kexec_direct(world.registry, world.backend)
    after = _next_boot(world, tmp_path)
    assert after.recover().restored == ["vm1", "vm2"]
    previous = after.registry.previous
    assert previous is not None and previous.kexec_pending
    assert previous.extra["qualification"] == {"step": 2}
    assert after.registry.vms["vm2"].state is VmState.INCOMING
    after.power_off()


def test_token_0_alone_is_a_whole_manifest_for_a_luod_that_knows_no_token_1(
    world: World, tmp_path: Path
) -> None:
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.carry("qualification", {"step": 1})
    world.registry.stage_kexec()
    world.registry.carry("qualification", {"step": 2})
    _load(world, tmp_path)
    with pytest.raises(SimulatedKexec):
        handoff.kexec_direct(world.registry, world.backend)
    after = _next_boot(world, tmp_path)
    with after.backend.device.open() as device:
        session = device.retrieve_session(STATE_SESSION)
        with session.retrieve(MANIFEST_TOKEN) as fd:
            alone = manifest.from_fd(fd)  # what a luod of the previous version reads
        with session.retrieve(HANDOFF_JOURNAL_TOKEN) as fd:
            journal = manifest.read_fd(fd)
        session.finish()
        session.close()
    assert alone.kexec_pending and alone.vms["vm1"].files["ram0"].token == 1
    assert alone.extra["qualification"] == {"step": 1}  # as it was before the freeze
    lines = journal.rstrip(b"\0")  # token 1 was preserved with room before the freeze
    assert lines.endswith(b'{"kexec":{"extra":{"qualification":{"step":2}}}}\n')
    assert len(journal) > len(lines)
    # a luod of the previous version replays the zeros too: one line that no check passes
    assert manifest.replay(alone, journal).extra["qualification"] == {"step": 2}
    after.power_off()


def test_a_kexec_before_the_last_ready_hands_over_the_snapshot(
    world: World, tmp_path: Path
) -> None:
    """No token 1 (as from a luod that wrote token 0 only): the snapshot is the manifest."""
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.stage_kexec()
    _load(world, tmp_path)
    with pytest.raises(SimulatedKexec):
        world.backend.reboot_kexec()
    after = _next_boot(world, tmp_path)
    report = after.recover()
    assert (report.mode, report.restored) == ("after-kexec", ["vm1"])
    after.power_off()


def test_the_disk_copy_replays_the_kexec_line(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.stage_kexec()
    world.registry.carry("qualification", {"step": 2})
    world.registry.begin_kexec()
    on_disk = manifest.read_disk(world.registry.state_dir)
    assert on_disk is not None and on_disk.kexec_pending
    assert on_disk.extra == {"qualification": {"step": 2}} and list(on_disk.vms) == ["vm1"]
    world.registry.end_kexec()


def test_calling_the_kexec_off_closes_the_staged_session(world: World) -> None:
    """Kept open, it would hand a stale manifest to a kexec that comes later by other means."""
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.stage_kexec()
    assert STATE_SESSION in _held(world)
    world.registry.end_kexec()
    assert STATE_SESSION not in _held(world) and not world.registry.kexec_staged
    world.registry.preserve(ROOT, "vm1", [FileSpec("ram1")], [ram(b"more")])  # allowed again
    on_disk = manifest.read_disk(world.registry.state_dir)
    assert on_disk is not None and not on_disk.kexec_pending


def _held(world: World) -> set[str]:
    held = world.custody.recover()
    for fd in held.values():
        fd.close()
    return set(held)


def test_the_snapshot_is_staged_before_freeze_and_withdrawn_by_an_abort(tmp_path: Path) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path / "luod")
        vmm = await luod.handover_vm("vm1")
        luod.driver.start(UpdateRequest(luod.kernel, deadlines={"freezing": 60}))
        await until(lambda: vmm.events("FREEZE"))
        held = luod.custody.recover()
        for fd in held.values():
            fd.close()
        assert STATE_SESSION in held and luod.registry.kexec_staged  # before any READY
        staged = manifest.read_disk(luod.state)
        assert staged is not None and staged.kexec_pending
        assert staged.extra["update"]["phases"][-1]["to"] == "prepared"
        reply = await luod.ask(vmm, {"cmd": "READY", "id": "vm1", "error": "cannot pause"})
        assert reply["ok"]
        await luod.driver.wait()
        assert not luod.registry.kexec_staged
        left = luod.custody.recover()
        for fd in left.values():
            fd.close()
        assert STATE_SESSION not in left
        luod.close()

    asyncio.run(scenario())


def test_inside_the_pause_the_running_record_grows_by_a_line_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FREEZING (after the host's sync before FREEZE) and FROZEN are appended, with the freeze
    acks, not the record rewritten; a luod killed there ends the update with every stamp it
    had."""
    monkeypatch.setenv(holds.ENV, "frozen=30")

    async def scenario() -> None:
        luod = Luod(tmp_path / "luod")
        vmm = await luod.handover_vm("vm1")
        luod.driver.start(UpdateRequest(luod.kernel))
        await until(lambda: vmm.events("FREEZE"))
        await luod.ask(vmm, {"cmd": "READY", "id": "vm1"})
        await until(lambda: luod.driver.machine.phase is Phase.FROZEN)
        first, *appended = (luod.state / running.RUNNING).read_text().splitlines()
        written = json.loads(first)["record"]["phases"]
        assert written[-1]["to"] == "prepared"  # the last rewrite: before the sync
        lines = [json.loads(line) for line in appended]
        assert [line["phase"]["to"] for line in lines if "phase" in line] == ["freezing", "frozen"]
        last = lines[-1]
        assert last["phase"]["to"] == "frozen" and ["vm1", "freeze_ack"] in [
            step[:2] for step in last["steps"]
        ]
        kill_during_update(luod)
        again = Restarted(luod)
        [record] = timeline.read_history(again.state)
        assert [p["to"] for p in record["phases"]][-3:] == ["frozen", "aborting", "idle"]
        assert {"freeze_sent", "freeze_ack"} <= set(record["vms"]["vm1"])
        again.close()

    asyncio.run(scenario())


def test_a_malformed_journal_line_is_skipped_not_trusted(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"guest")
    snapshot = world.registry.manifest()
    snapshot.extra = {"qualification": {"step": 1}}
    bad = b'{"kexec":{"extra":{"update":{"id":7}}}}\n{"kexec":{"extra":[]}}\n{"forget":'
    replayed = manifest.replay(snapshot, bad)
    assert replayed.extra == {"qualification": {"step": 1}} and not replayed.kexec_pending
    assert list(replayed.vms) == ["vm1"]


def test_inside_the_pause_token_1_is_one_write(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token 1's memfd was made and preserved with the snapshot, before the freeze:
    after the last READY no memfd is made and no PRESERVE_FD goes to the kernel (0.9-2.7 ms of
    every VM's pause in a TCG guest), and the next boot reads the lines written into it."""
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.stage_kexec()
    world.registry.carry("update", {"id": "u1", "freeze": "acked"})

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("a memfd made or preserved inside the VMs' pause")

    monkeypatch.setattr(memfd, "create", refused)
    monkeypatch.setattr(Session, "preserve", refused)
    _load(world, tmp_path)
    with pytest.raises(SimulatedKexec):
        handoff.kexec_direct(world.registry, world.backend)
    monkeypatch.undo()
    after = _next_boot(world, tmp_path)
    assert after.recover().restored == ["vm1"]
    previous = after.registry.previous
    assert previous is not None and previous.extra["update"] == {"id": "u1", "freeze": "acked"}
    after.power_off()


def test_lines_that_outgrow_their_room_go_in_a_new_session(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the freeze add more than the room made for it, the handoff is written again as
    before: a new session ``luod`` with the snapshot and a memfd of the lines' size."""
    monkeypatch.setattr(registry_module, "HANDOFF_ROOM_BASE", 16)
    monkeypatch.setattr(registry_module, "HANDOFF_ROOM_PER_VM", 0)
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.carry("qualification", {"step": 1})
    world.registry.stage_kexec()
    big = "x" * 4 * len(manifest.serialize(world.registry.manifest()))
    world.registry.carry("qualification", {"step": 2, "notes": big})
    _load(world, tmp_path)
    with pytest.raises(SimulatedKexec):
        handoff.kexec_direct(world.registry, world.backend)
    after = _next_boot(world, tmp_path)
    assert after.recover().restored == ["vm1"]
    previous = after.registry.previous
    assert previous is not None and previous.kexec_pending
    assert previous.extra["qualification"] == {"step": 2, "notes": big}
    after.power_off()


def test_inside_the_pause_the_handoff_opens_no_file(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot staged before the freeze removes the disk journal; the journal is made again
    right then (and synced with it), not by the handoff's last line inside every VM's pause."""
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.stage_kexec()
    opened: list[str] = []
    real_open = os.open

    def watched(path: str, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        fd: int = real_open(path, *args, **kwargs)
        return fd

    monkeypatch.setattr(os, "open", watched)  # luod.core.statedir opens with os.open
    world.registry.carry("update", {"id": "u1"})
    world.registry.begin_kexec()
    monkeypatch.undo()
    assert opened == []
    journal = world.registry.state_dir / manifest.JOURNAL
    assert journal.read_bytes().startswith(b'{"kexec":')
