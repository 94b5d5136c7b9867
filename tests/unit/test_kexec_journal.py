"""luod.core.kexec_journal: the state directory's journal ends with the handoff's kexec line
from the last READY (``Registry.begin_kexec``) until luod writes its next snapshot: the hint
luod.start reads, before luod's imports, that a live update is being reclaimed."""

from __future__ import annotations

from pathlib import Path

from luod.core import manifest
from luod.core.kexec_journal import handed_over_vms
from luod.core.recovery import recover
from tests.unit.test_core import World, kexec, preserve


def ends_with_kexec(state_dir: Path) -> bool:
    return handed_over_vms(state_dir) is not None


def test_the_journal_ends_with_the_kexec_line_from_begin_kexec_until_the_next_snapshot(
    tmp_path: Path,
) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    world = World.boot(tmp_path / "kernel", tmp_path / "state")
    state = world.registry.state_dir
    assert not ends_with_kexec(state)  # nothing written yet
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.stage_kexec()
    assert not ends_with_kexec(state)  # staged before the freeze: a snapshot, no journal
    world.registry.begin_kexec()
    assert ends_with_kexec(state)  # inside the VMs' pause, the handoff's last line
    world.registry.end_kexec()  # the reboot failed: changes allowed again
    assert not ends_with_kexec(state)


def test_after_the_kexec_luod_reads_it_and_its_recovery_ends_it(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    world = World.boot(tmp_path / "kernel", tmp_path / "state")
    preserve(world.registry, "vm1", ram0=b"guest")
    after = kexec(world, tmp_path)
    assert ends_with_kexec(after.registry.state_dir)
    recover(after.registry, after.backend, after.custody)
    assert not ends_with_kexec(after.registry.state_dir)  # this boot's snapshot written


def test_a_torn_journal_a_symlink_or_a_directory_is_no_kexec(tmp_path: Path) -> None:
    journal = tmp_path / manifest.JOURNAL
    journal.write_bytes(manifest.journal_line({"forget": "vm1"}) + b'{"kexec":{"ext')
    assert ends_with_kexec(tmp_path)  # a torn kexec line: what began it is enough for a hint
    journal.write_bytes(manifest.journal_line({"forget": "vm1"}))
    assert not ends_with_kexec(tmp_path)
    journal.unlink()
    journal.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_bytes(manifest.kexec_line({}, {}))
    assert not ends_with_kexec(tmp_path)  # never followed
    journal.unlink()
    journal.mkdir()
    assert not ends_with_kexec(tmp_path)


def test_the_kexec_line_says_how_many_vms_were_handed_over(tmp_path: Path) -> None:
    journal = tmp_path / manifest.JOURNAL
    assert handed_over_vms(tmp_path) is None  # no journal
    record = {"id": "u1", "vms": {"vm1": {}, "vm2": {}}}
    journal.write_bytes(manifest.kexec_line({"update": record}, {}))
    assert handed_over_vms(tmp_path) == 2
    # VMs first stepped after the record was staged (handed over, so FREEZE was their first
    # step) count too: they are in the kexec line's change lines
    lines = [b'{"steps":[["vm2","freeze_sent",{}],["vm3","freeze_sent",{}]]}', b'{"steps":[]}']
    journal.write_bytes(manifest.kexec_line({"update": record}, {}, lines))
    assert handed_over_vms(tmp_path) == 3
    journal.write_bytes(manifest.kexec_line({"qualification": {"step": 2}}, {}))
    assert handed_over_vms(tmp_path) == 0  # no update record carried
    journal.write_bytes(b'{"kexec":{"extra":{"update":{"vms":{"vm1"')
    assert handed_over_vms(tmp_path) == 0  # torn
    journal.write_bytes(manifest.kexec_line({"update": {"vms": ["vm1"]}}, {}))
    assert handed_over_vms(tmp_path) == 0  # not what luod writes
    journal.write_bytes(manifest.journal_line({"forget": "vm1"}))
    assert handed_over_vms(tmp_path) is None
