"""The journal and the running update's record are appended through a kept fd
(luod.core.statedir.AppendFile): the bytes on disk are those a fresh open per line wrote, a
snapshot or a record renamed over the file never leaves luod appending to the old inode, and
luod's shutdown closes the fds."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from luod.core import manifest as manifest_io
from luod.core import record_lines, running, statedir, timeline
from luod.core.clock import Stamp
from luod.core.model import Mode
from tests.rest.harness import Luod
from tests.unit.test_core import ROOT, World

LINES = [manifest_io.journal_line({"forget": f"vm{n}"}) for n in range(3)] + [b"{}\n"]


def _open_on(path: Path) -> list[str]:
    """This process's fds open on ``path`` (its inode, linked or not)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # listdir's own fd, closed since
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.removesuffix(" (deleted)") == str(path):
                found.append(target)
    return found


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    statedir.prepare(path, statedir.STATE_DIR_MODE)
    return path


def test_the_lines_on_disk_are_those_an_open_per_line_writes(state: Path) -> None:
    kept = statedir.AppendFile(state / "kept.jsonl")
    for line in LINES:
        kept.write(line)
        statedir.append(state / "opened.jsonl", line)
    kept.close()
    assert (state / "kept.jsonl").read_bytes() == (state / "opened.jsonl").read_bytes()
    assert (state / "kept.jsonl").read_bytes() == b"".join(LINES)
    assert os.stat(state / "kept.jsonl").st_mode & 0o777 == statedir.FILE_MODE


def test_a_snapshot_does_not_leave_the_journal_on_the_old_inode(world: World) -> None:
    state = world.registry.state_dir
    world.registry.register(ROOT, "vm1", Mode.HANDOVER)  # the first change: a snapshot
    world.registry.register(ROOT, "vm2", Mode.HANDOVER)  # a journal line: the fd is kept
    assert _open_on(state / manifest_io.JOURNAL) == [str(state / manifest_io.JOURNAL)]
    world.registry.persist()  # a new snapshot removes the journal
    world.registry.register(ROOT, "vm3", Mode.HANDOVER)
    on_disk = manifest_io.read_disk(state)
    assert on_disk is not None and set(on_disk.vms) == {"vm1", "vm2", "vm3"}
    assert (state / manifest_io.JOURNAL).read_bytes().count(b"\n") == 1  # vm3's line alone
    assert not [t for t in _open_on(state / manifest_io.JOURNAL) if t.endswith("(deleted)")]


def test_a_record_renamed_over_the_file_gets_the_next_line(state: Path) -> None:
    out = running.appender(state)
    at = Stamp(1.0, 2.0, 3.0)
    running.write(state, timeline.UpdateRecord(), "boot")
    running.append(out, record_lines.encode(None, [("vm1", "reclaimed", at)]))
    running.write(state, timeline.UpdateRecord(), "boot")  # a new inode renamed over it
    running.append(out, record_lines.encode(None, [("vm2", "reclaimed", at)]))
    interrupted = running.read(state, "boot")
    assert interrupted is not None and set(interrupted.record.vms) == {"vm2"}
    running.clear(state)
    # a removed file is created again
    running.append(out, record_lines.encode(None, [("vm3", "done", at)]))
    assert (state / running.RUNNING).read_bytes().count(b"\n") == 1
    out.close()


def test_close_closes_the_fd_and_may_be_called_twice(state: Path) -> None:
    kept = statedir.AppendFile(state / "kept.jsonl")
    kept.write(LINES[0])
    assert len(_open_on(state / "kept.jsonl")) == 1
    kept.close()
    kept.close()
    assert _open_on(state / "kept.jsonl") == []
    kept.write(LINES[1])  # a later line opens it again
    kept.close()
    assert (state / "kept.jsonl").read_bytes() == LINES[0] + LINES[1]


def test_a_planted_link_is_refused(state: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (state / manifest_io.JOURNAL).symlink_to(victim)
    with pytest.raises(OSError):
        statedir.AppendFile(state / manifest_io.JOURNAL).write(LINES[0])
    assert victim.read_bytes() == b"precious\n"


def test_luods_shutdown_closes_the_journal_and_the_record(tmp_path: Path) -> None:
    async def scenario() -> tuple[Luod, Path]:
        luod = Luod(tmp_path / "luod")
        await luod.handover_vm("vm1")
        await luod.handover_vm("vm2")  # journal lines after the first change's snapshot
        log = luod.driver.log
        log.open({})
        log.stamp("vm1", "freeze_sent")
        log.flush()  # one line to the running record
        return luod, luod.registry.state_dir

    luod, state = asyncio.run(scenario())
    kept = [state / manifest_io.JOURNAL, state / running.RUNNING]
    assert all(_open_on(path) for path in kept)
    luod.daemon.shutdown()
    assert [target for path in kept for target in _open_on(path)] == []
    luod.registry.close()


class NinePeeStat:
    """fstat as the 7.2.13 guest's 9p (cache=loose) answers it for files under ``under``,
    measured: an fd on a file renamed over still reads one link (``renamed``), and fstat of a
    removed file fails with ENOENT."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, under: Path, renamed: bool) -> None:
        self.real, self.under, self.renamed = os.fstat, str(under), renamed
        monkeypatch.setattr(os, "fstat", self)

    def __call__(self, fd: int) -> os.stat_result:
        found = self.real(fd)
        target = os.readlink(f"/proc/self/fd/{fd}")
        if found.st_nlink or not target.startswith(self.under):
            return found
        if not self.renamed:
            raise FileNotFoundError(2, "No such file or directory")
        fields = list(found)
        fields[3] = 1  # st_nlink
        return os.stat_result(fields)


def test_a_record_renamed_over_is_followed_where_fstat_keeps_its_link_count(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    NinePeeStat(monkeypatch, state, renamed=True)
    kept = statedir.AppendFile(state / "record.jsonl")
    kept.write(b"first\n")
    statedir.write_atomic(state / "record.jsonl", b"whole\n")  # as running.write does
    kept.write(b"after\n")
    kept.close()
    assert (state / "record.jsonl").read_bytes() == b"whole\nafter\n"


def test_a_removed_journal_is_reopened_where_fstat_of_it_fails(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    NinePeeStat(monkeypatch, state, renamed=False)
    kept = statedir.AppendFile(state / "journal.jsonl")
    kept.write(b"first\n")
    statedir.unlink(state / "journal.jsonl")  # as a snapshot does
    kept.write(b"after\n")
    kept.close()
    assert (state / "journal.jsonl").read_bytes() == b"after\n"
