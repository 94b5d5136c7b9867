"""A RECLAIM's RETRIEVE_FD forks a helper into the VMM's cgroup only when that cgroup is not
luod's own (luod.kernel.charged): in luod's own cgroup the pages are charged there anyway, and
the fork was most of a RECLAIM under TCG (bench/NOTES.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from luod.kernel import charged
from luod.kernel.fd import OwnedFd


class Session:
    """Retrieves /dev/null, and says in which process."""

    known_name = "vm1"

    def __init__(self) -> None:
        self.retrieved_in: list[int] = []

    def retrieve(self, token: int) -> OwnedFd:
        self.retrieved_in.append(os.getpid())
        return OwnedFd(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))


class Forked(Exception):
    pass


@pytest.fixture
def cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cgroup tree with luod in /luod and a VMM's /vm1; os.fork stopped before it forks."""
    for name in ("luod", "vm1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cgroup.procs").write_text("")
    monkeypatch.setattr(charged, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(charged, "cgroup_of", lambda pid: "/luod" if pid == os.getpid() else None)

    def no_fork() -> int:
        raise Forked

    monkeypatch.setattr(os, "fork", no_fork)
    return tmp_path


def test_in_luods_own_cgroup_the_files_are_retrieved_in_process(cgroups: Path) -> None:
    session = Session()
    fds = charged.retrieve_charged(session, [1, 2], "/luod")  # type: ignore[arg-type]
    assert session.retrieved_in == [os.getpid()] * 2 and len(fds) == 2
    for fd in fds:
        fd.close()


def test_another_cgroup_still_gets_its_helper(cgroups: Path) -> None:
    with pytest.raises(Forked):
        charged.retrieve_charged(Session(), [1], "/vm1")  # type: ignore[arg-type]


def test_no_cgroup_or_one_that_is_gone_is_retrieved_in_process(cgroups: Path) -> None:
    session = Session()
    for cgroup in (None, "/gone"):
        for fd in charged.retrieve_charged(session, [1], cgroup):  # type: ignore[arg-type]
            fd.close()
    assert session.retrieved_in == [os.getpid()] * 2
