"""A change luod made but could not write to its state directory (disk full, out of fds) is
answered ``state-write-failed`` with the errno and what to do, not ``internal``; and the next
change that can be written stores the whole manifest, so the one that failed is not missing
from the disk (a journal line after a lost one would describe a VM the disk never had)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from luod.core import manifest
from luod.core.model import FileSpec, Mode
from luod.errors import LuodError
from tests.unit.test_core import ROOT, World, ram


def test_a_journal_that_cannot_be_written_is_state_write_failed(
    world: World, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    world.registry.register(ROOT, "vm1", Mode.HANDOVER)  # the first change: a whole snapshot
    (state / manifest.JOURNAL).mkdir()  # now every append fails (EISDIR), as a full disk would
    with pytest.raises(LuodError) as caught:
        world.registry.register(ROOT, "vm2", Mode.HANDOVER)
    assert caught.value.code == "state-write-failed"
    assert caught.value.errno == errno.EISDIR
    assert str(state) in caught.value.message and caught.value.hint
    assert "vm2" in world.registry.vms  # made: luod holds its session
    with pytest.raises(LuodError) as again:
        world.registry.preserve(ROOT, "vm2", [FileSpec("ram")], [ram(b"x" * 4096)])
    assert again.value.code == "state-write-failed"

    (state / manifest.JOURNAL).rmdir()  # the cause is fixed: the next change writes it all
    world.registry.register(ROOT, "vm3", Mode.HANDOVER)
    on_disk = manifest.read_disk(state)
    assert on_disk is not None and set(on_disk.vms) == {"vm1", "vm2", "vm3"}
    assert [f.name for f in on_disk.vms["vm2"].files.values()] == ["ram"]


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "full"), (errno.EMFILE, "LimitNOFILE"), (errno.EROFS, "read-only")],
)
def test_the_hint_says_what_to_do(code: int, words: str, tmp_path: Path) -> None:
    from luod.core import statedir

    error = statedir.write_failed(tmp_path, OSError(code, "x"))
    assert error.code == "state-write-failed" and error.errno == code and words in error.hint
