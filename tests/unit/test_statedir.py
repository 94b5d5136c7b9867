"""luod's state and runtime directories: no symlink is followed, one file-mode policy, one
luod per state directory, and directories others could write to are refused (issue 13,
findings 6, 7, 9 and 13)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.core import manifest as manifest_io
from luod.core import running, statedir, timeline
from luod.errors import LuodError


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    statedir.prepare(path, statedir.STATE_DIR_MODE)
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(b"precious\n")
    return path


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _manifest() -> manifest_io.Manifest:
    return manifest_io.Manifest("boot", "7.2.13-luo", 0)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_write_atomic_ignores_a_link_planted_at_the_old_temporary_name(
    state: Path, victim: Path
) -> None:
    (state / f".{manifest_io.FILENAME}.{os.getpid()}.tmp").symlink_to(victim)
    manifest_io.write_atomic(state, _manifest())
    assert victim.read_bytes() == b"precious\n"
    assert manifest_io.read_disk(state) is not None


def test_write_atomic_replaces_a_link_at_the_manifest_itself(state: Path, victim: Path) -> None:
    (state / manifest_io.FILENAME).symlink_to(victim)
    manifest_io.write_atomic(state, _manifest())
    assert victim.read_bytes() == b"precious\n"
    assert not (state / manifest_io.FILENAME).is_symlink()


def test_a_link_at_the_manifest_is_not_read(state: Path, victim: Path) -> None:
    (state / manifest_io.FILENAME).symlink_to(victim)
    with pytest.raises(LuodError) as refused:
        manifest_io.read_disk(state)
    assert refused.value.code == "manifest-unreadable"


def test_journal_append_refuses_a_planted_link(state: Path, victim: Path) -> None:
    (state / manifest_io.JOURNAL).symlink_to(victim)
    with pytest.raises(OSError):
        statedir.AppendFile(state / manifest_io.JOURNAL).write(
            manifest_io.journal_line({"forget": "vm1"})
        )
    assert victim.read_bytes() == b"precious\n"


def test_history_append_refuses_a_planted_link(state: Path, victim: Path) -> None:
    (state / timeline.HISTORY).symlink_to(victim)
    with pytest.raises(OSError):
        timeline.append_history(state, timeline.UpdateRecord())
    assert victim.read_bytes() == b"precious\n"


def test_a_fifo_as_history_does_not_hang_the_reader(state: Path) -> None:
    os.mkfifo(state / timeline.HISTORY)
    with pytest.raises(OSError):
        timeline.read_history(state)


@pytest.mark.usefixtures("loose_umask")
def test_every_state_file_is_0600_whatever_the_umask(state: Path) -> None:
    manifest_io.write_atomic(state, _manifest())
    journal = statedir.AppendFile(state / manifest_io.JOURNAL)
    journal.write(manifest_io.journal_line({"forget": "vm1"}))
    journal.close()
    timeline.append_history(state, timeline.UpdateRecord())
    running.write(state, timeline.UpdateRecord(), "boot")
    for name in (manifest_io.FILENAME, manifest_io.JOURNAL, timeline.HISTORY, running.RUNNING):
        assert _mode(state / name) == statedir.FILE_MODE, name


def test_the_running_record_ignores_a_link_at_its_old_temporary_name(
    state: Path, victim: Path
) -> None:
    (state / f".{running.RUNNING}.{os.getpid()}.tmp").symlink_to(victim)
    running.write(state, timeline.UpdateRecord(), "boot")
    assert victim.read_bytes() == b"precious\n"
    interrupted = running.read(state, "boot")
    assert interrupted is not None and interrupted.same_boot


def test_a_link_at_the_running_record_is_neither_read_nor_removed_through(
    state: Path, victim: Path
) -> None:
    (state / running.RUNNING).symlink_to(victim)
    assert running.read(state, "boot") is None
    running.clear(state)
    assert victim.read_bytes() == b"precious\n"
    assert not (state / running.RUNNING).is_symlink()


@pytest.mark.usefixtures("loose_umask")
def test_directories_get_the_policy_mode(tmp_path: Path) -> None:
    statedir.prepare(tmp_path / "s", statedir.STATE_DIR_MODE)
    statedir.prepare(tmp_path / "r", statedir.RUNTIME_DIR_MODE)
    assert _mode(tmp_path / "s") == 0o750
    assert _mode(tmp_path / "r") == 0o755


def test_tighten_fixes_an_older_luods_modes(state: Path) -> None:
    (state / timeline.HISTORY).write_text("{}\n")
    os.chmod(state / timeline.HISTORY, 0o644)
    statedir.tighten(state / timeline.HISTORY)
    assert _mode(state / timeline.HISTORY) == statedir.FILE_MODE


@pytest.mark.parametrize("mode", [0o770, 0o757, 0o1777])
def test_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "open"
    path.mkdir()
    os.chmod(path, mode)
    with pytest.raises(LuodError) as refused:
        statedir.prepare(path, statedir.STATE_DIR_MODE)
    assert refused.value.code == "unsafe-dir"
    assert "chmod go-w" in refused.value.hint


def test_a_directory_of_another_uid_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "theirs"
    path.mkdir(mode=0o755)
    with pytest.raises(LuodError) as refused:
        statedir.check_dir(path, uid=os.geteuid() + 1)
    assert refused.value.code == "unsafe-dir"


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(LuodError, match="symlink"):
        statedir.prepare(tmp_path / "link", statedir.STATE_DIR_MODE)


def test_one_lock_per_state_directory(state: Path) -> None:
    first = statedir.StateLock(state)
    try:
        with pytest.raises(LuodError) as refused:
            statedir.StateLock(state)
        assert refused.value.code == "state-dir-locked"
        assert f"pid {os.getpid()}" in refused.value.message
    finally:
        first.close()
    statedir.StateLock(state).close()  # released with its holder


def test_the_lock_file_is_not_followed(state: Path, victim: Path) -> None:
    (state / statedir.LOCK_NAME).symlink_to(victim)
    with pytest.raises(OSError):
        statedir.StateLock(state)
    assert victim.read_bytes() == b"precious\n"


def test_the_keepers_lock_file_is_not_followed(tmp_path: Path, victim: Path) -> None:
    from luod.custody import keeper

    (tmp_path / "keeper.sock.lock").symlink_to(victim)
    with pytest.raises(OSError):
        keeper._lock(tmp_path / "keeper.sock")
    assert victim.read_bytes() == b"precious\n"
