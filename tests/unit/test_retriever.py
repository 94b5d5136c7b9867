"""The kept retrieve helper (luod.kernel.retriever): RECLAIMs from another cgroup go to one
helper process instead of a fork of luod each; while it starts, or once lost, luod forks as
before; a kernel error is the kernel's answer, not a reason to fork. The helper itself (a real
process here) enters the VMM's cgroup for each request and goes back to its own."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from luod.kernel import charged, retriever
from luod.kernel.errors import LuoError
from luod.kernel.fd import OwnedFd
from luod.kernel.retriever import ChargedRetriever, Helper, HelperLost
from luod.vmm.client import Client
from tests.rest.harness import until


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def via(self) -> list[str]:
        return [f["via"] for _, e, f in self.lines if e == "retrieved-in-cgroup"]


class Session:
    known_name = "vm1"

    def __init__(self) -> None:
        self.in_place = 0
        self._null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self._null

    def retrieve(self, token: int) -> OwnedFd:
        self.in_place += 1
        return OwnedFd(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))

    def close(self) -> None:
        os.close(self._null)


class FakeProcess:
    def __init__(self) -> None:
        self.returncode: int | None = None
        self.pid = 4242

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        self.returncode = -9


class FakeHelper:
    """A helper that is ready after ``polls`` looks, then answers with ``answer``."""

    def __init__(self, polls: int = 0, answer: Exception | None = None) -> None:
        self.process = FakeProcess()
        self.polls = polls
        self.answer = answer
        self.served = 0
        self.closed = False

    def poll_ready(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def retrieve(self, session: Any, tokens: Sequence[int], procs: Path) -> list[OwnedFd]:
        if self.answer is not None:
            raise self.answer
        self.served += 1
        return [OwnedFd(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)) for _ in tokens]

    def close(self) -> None:
        self.closed = True


def starter(made: list[FakeHelper], answer: Exception | None = None) -> Callable[[], FakeHelper]:
    """A helper start that makes a FakeHelper (answering ``answer``) and records it in ``made``."""

    def start() -> FakeHelper:
        made.append(FakeHelper(answer=answer))
        return made[-1]

    return start


@pytest.fixture
def cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Sequence[int]]:
    """luod in /luod, VMMs in /vm1 and /vm2; forks recorded (the tokens each got), not made."""
    for name in ("luod", "vm1", "vm2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cgroup.procs").write_text("")
    monkeypatch.setattr(charged, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(charged, "cgroup_of", lambda pid: "/luod" if pid == os.getpid() else None)
    forks: list[Sequence[int]] = []

    def forked(session: Any, tokens: Sequence[int], cgroup: str) -> list[OwnedFd]:
        forks.append(tokens)
        return [OwnedFd(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)) for _ in tokens]

    monkeypatch.setattr(charged, "retrieve_forked", forked)
    return forks


def reclaim(kept: ChargedRetriever, cgroup: str | None, tokens: Sequence[int] = (1,)) -> None:
    session = Session()
    try:
        for fd in kept(session, tokens, cgroup):  # type: ignore[arg-type]
            fd.close()
    finally:
        session.close()


def test_the_first_foreign_reclaim_forks_and_starts_the_helper_the_next_use_it(
    cgroups: list[Sequence[int]],
) -> None:
    helpers: list[FakeHelper] = []

    start = starter(helpers)

    log = Log()
    kept = ChargedRetriever(log, start=start)  # type: ignore[arg-type]
    reclaim(kept, "/vm1")
    reclaim(kept, "/vm2", (1, 2))
    reclaim(kept, "/vm1")
    assert len(helpers) == 1 and helpers[0].served == 2
    assert len(cgroups) == 1  # one fork, not three
    assert log.via() == ["fork", "helper", "helper"]


def test_a_helper_begun_before_luods_imports_serves_the_first_reclaim(
    cgroups: list[Sequence[int]],
) -> None:
    """luod.start began it (``begin_early``): the first RECLAIM from another cgroup finds it
    ready and forks nothing, and the retriever owns it. Lost, it is the first of the STARTS
    failures."""
    begun, later = FakeHelper(), list[FakeHelper]()

    start = starter(later, HelperLost("gone"))

    log = Log()
    kept = ChargedRetriever(log, start=start, begun=begun)  # type: ignore[arg-type]
    reclaim(kept, "/vm1")
    reclaim(kept, "/vm2")
    assert log.via() == ["helper", "helper"] and cgroups == [] and begun.served == 2
    begun.answer = HelperLost("gone")
    for _ in range(2 * retriever.STARTS):
        reclaim(kept, "/vm1")
    assert len(later) == retriever.STARTS - 1  # the begun one's loss was the first failure
    kept.close()
    assert begun.closed


def test_at_an_updates_end_the_helper_retires_and_the_next_reclaim_starts_one_again(
    cgroups: list[Sequence[int]],
) -> None:
    """An idle host does not keep the helper between live updates; a retired helper did not
    fail, so retiring it after every update never uses up the STARTS."""
    helpers: list[FakeHelper] = []

    start = starter(helpers)

    log = Log()
    kept = ChargedRetriever(log, start=start)  # type: ignore[arg-type]
    assert kept.retire("nothing yet") is None and log.lines == []
    for update in range(2 * retriever.STARTS):
        reclaim(kept, "/vm1")  # forks, starts a helper
        reclaim(kept, "/vm2")  # through it
        assert kept.retire(f"update {update} ended") == 4242
        assert helpers[-1].closed and helpers[-1].served == 1
    assert len(helpers) == 2 * retriever.STARTS
    assert log.via() == ["fork", "helper"] * 2 * retriever.STARTS
    retired = [f for _, e, f in log.lines if e == "retriever-retired"]
    assert [f["why"] for f in retired] == [f"update {n} ended" for n in range(2 * retriever.STARTS)]
    assert not any(level == "warning" for level, _, _ in log.lines)


@pytest.mark.parametrize("own", ["/", None, "/luod.service"])
def test_begin_early_starts_a_helper_only_in_a_cgroup_of_luods_own(
    monkeypatch: pytest.MonkeyPatch, own: str | None
) -> None:
    """In the root cgroup (a bare init's) the VMMs most likely run beside luod and are served
    in place: no helper. In a cgroup of its own (a service's), VMMs are units apart."""
    started: list[FakeHelper] = []
    monkeypatch.setattr(charged, "cgroup_of", lambda pid: own if pid == os.getpid() else None)

    start = starter(started)

    monkeypatch.setattr(Helper, "fork", start)
    monkeypatch.setattr(Helper, "start", start)  # should another test have left a thread
    assert (retriever.begin_early() is not None) == (own not in ("/", None))
    assert len(started) == (own not in ("/", None))


@pytest.mark.parametrize("threads", [1, 2])
def test_begin_early_forks_the_helper_while_luod_has_one_thread_else_spawns_it(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    how: list[str] = []
    monkeypatch.setattr(charged, "cgroup_of", lambda pid: "/luod.service")
    monkeypatch.setattr(threading, "active_count", lambda: threads)

    def made(way: str) -> Callable[[], FakeHelper]:
        def make() -> FakeHelper:
            how.append(way)
            return FakeHelper()

        return make

    monkeypatch.setattr(Helper, "fork", made("fork"))
    monkeypatch.setattr(Helper, "start", made("spawn"))
    assert retriever.begin_early() is not None
    assert how == (["fork"] if threads == 1 else ["spawn"])


def test_begin_early_that_cannot_start_leaves_it_to_the_first_reclaim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails() -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(charged, "cgroup_of", lambda pid: "/luod.service")
    monkeypatch.setattr(Helper, "fork", fails)
    monkeypatch.setattr(Helper, "start", fails)
    assert retriever.begin_early() is None


def test_luods_own_cgroup_never_starts_a_helper(cgroups: list[Sequence[int]]) -> None:
    started: list[FakeHelper] = []

    start = starter(started)

    kept = ChargedRetriever(Log(), start=start)  # type: ignore[arg-type]
    for cgroup in ("/luod", None, "/gone"):
        reclaim(kept, cgroup)
    assert started == [] and cgroups == []


def test_while_the_helper_starts_luod_forks(cgroups: list[Sequence[int]]) -> None:
    helper = FakeHelper(polls=2)
    log = Log()
    kept = ChargedRetriever(log, start=lambda: helper)  # type: ignore[arg-type, return-value]
    for _ in range(4):
        reclaim(kept, "/vm1")
    assert log.via() == ["fork", "fork", "fork", "helper"]


def test_a_lost_helper_costs_a_fork_and_is_started_again_a_few_times_only(
    cgroups: list[Sequence[int]],
) -> None:
    helpers: list[FakeHelper] = []

    start = starter(helpers, HelperLost("gone"))

    log = Log()
    kept = ChargedRetriever(log, start=start)  # type: ignore[arg-type]
    for _ in range(2 * retriever.STARTS + 2):
        reclaim(kept, "/vm1")
    assert len(helpers) == retriever.STARTS
    assert all(h.closed for h in helpers)
    assert set(log.via()) == {"fork"} and len(cgroups) == 2 * retriever.STARTS + 2
    lost = [f for level, e, f in log.lines if e == "retriever-lost"]
    assert len(lost) == retriever.STARTS and lost[-1]["starts_left"] == 0
    assert all(level == "warning" for level, e, _ in log.lines if e == "retriever-lost")


def test_an_exited_helper_is_noticed_before_a_request_is_sent(
    cgroups: list[Sequence[int]],
) -> None:
    helper = FakeHelper(polls=1)
    log = Log()
    kept = ChargedRetriever(log, start=lambda: helper)  # type: ignore[arg-type, return-value]
    reclaim(kept, "/vm1")  # fork, helper started
    helper.process.returncode = 1
    reclaim(kept, "/vm1")
    assert log.via() == ["fork", "fork"] and helper.closed
    assert [e for _, e, _ in log.lines if e == "retriever-lost"] == ["retriever-lost"]


def test_the_kernels_refusal_through_the_helper_is_raised_not_retried_by_a_fork(
    cgroups: list[Sequence[int]],
) -> None:
    helper = FakeHelper(answer=LuoError(errno.ENOMEM, "RETRIEVE_FD", session="vm1", token=1))
    kept = ChargedRetriever(Log(), start=lambda: helper)  # type: ignore[arg-type, return-value]
    reclaim(kept, "/vm1")
    with pytest.raises(LuoError) as raised:
        reclaim(kept, "/vm1")
    assert raised.value.errno == errno.ENOMEM and len(cgroups) == 1


# --- the helper process itself ---------------------------------------------------------------
@pytest.fixture(params=["spawned", "forked"])
def real_helper(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Helper, Path]]:
    """A helper process, spawned (an interpreter of its own, as luod starts one at a RECLAIM)
    or forked (from luod's start, begin_early): the same helper either way."""
    home = tmp_path / "home.procs"
    home.write_text("")
    helper = (Helper.start if request.param == "spawned" else Helper.fork)(home=str(home))
    deadline = time.monotonic() + 30
    while not helper.poll_ready():
        assert helper.process.poll() is None, "the helper exited before it was ready"
        assert time.monotonic() < deadline, "the helper never said ready"
        time.sleep(0.01)
    yield helper, home
    helper.close()


def test_the_helper_enters_the_cgroup_answers_the_kernels_errno_and_goes_home(
    real_helper: tuple[Helper, Path], tmp_path: Path
) -> None:
    helper, home = real_helper
    target = tmp_path / "vm1.procs"
    for round_ in range(2):  # it stays for the next request
        target.write_text("")
        home.write_text("")
        session = Session()  # /dev/null: RETRIEVE_FD is not its ioctl
        try:
            with pytest.raises(LuoError) as raised:
                helper.retrieve(session, [7], target)  # type: ignore[arg-type]
        finally:
            session.close()
        assert raised.value.errno == errno.ENOTTY, round_
        assert target.read_text() == "0" and home.read_text() == "0"
    assert helper.process.poll() is None


def test_the_helper_leaves_when_luod_closes_its_end(real_helper: tuple[Helper, Path]) -> None:
    helper, _ = real_helper
    helper.channel.close()
    assert helper.process.wait(timeout=10) == 0


def test_a_retired_helper_process_has_exited(real_helper: tuple[Helper, Path]) -> None:
    """It says which cgroup it was in (luod's own, where it goes back after each request)."""
    helper, _ = real_helper
    log = Log()
    kept = ChargedRetriever(log, begun=helper)
    assert kept.retire("the update ended") == helper.process.pid
    assert helper.process.returncode == 0
    [(_, _, said)] = log.lines
    assert said["cgroup"] == charged.cgroup_of(os.getpid()) and said["pid"] == helper.process.pid


def test_a_forked_helper_holds_no_fd_of_luods_and_names_itself(tmp_path: Path) -> None:
    kept = os.open(tmp_path, os.O_RDONLY)  # stands for the sessions and sockets luod holds
    try:
        helper = Helper.fork()
    finally:
        os.close(kept)
    try:
        while not helper.poll_ready():
            time.sleep(0.01)
        fds = sorted(int(n) for n in os.listdir(f"/proc/{helper.process.pid}/fd"))
        assert fds == [0, 1, 2, fds[-1]] and fds[-1] > 2, fds  # stdio and its channel
        assert Path(f"/proc/{helper.process.pid}/fd/0").resolve() == Path(os.devnull)
        comm = Path(f"/proc/{helper.process.pid}/comm").read_text().strip()
        assert comm == retriever.FORKED_NAME
    finally:
        helper.close()
    assert helper.process.returncode == 0


def test_a_forked_helper_that_does_not_leave_in_time_is_killed() -> None:
    helper = Helper.fork()
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            helper.process.wait(timeout=0.05)  # its channel is open: it waits for requests
        assert helper.process.poll() is None
        helper.process.kill()
        assert helper.process.wait(timeout=10) == -9
    finally:
        helper.close()


def test_a_helper_that_cannot_go_home_leaves_and_is_lost(tmp_path: Path) -> None:
    helper = Helper.start(home=str(tmp_path / "no-such-dir" / "cgroup.procs"))
    try:
        while not helper.poll_ready():
            time.sleep(0.01)
        session = Session()
        try:
            with pytest.raises(LuoError):
                helper.retrieve(session, [7], tmp_path / "vm1.procs")  # type: ignore[arg-type]
            with pytest.raises(HelperLost):
                helper.retrieve(session, [7], tmp_path / "vm1.procs")  # type: ignore[arg-type]
        finally:
            session.close()
        assert helper.process.wait(timeout=10) != 0
    finally:
        helper.close()


def test_a_helper_lost_before_ready_costs_a_fork_not_a_failed_reclaim(
    cgroups: list[Sequence[int]],
) -> None:
    class Reset(FakeHelper):
        def poll_ready(self) -> bool:
            raise HelperLost("[Errno 104] Connection reset by peer")

    log = Log()
    kept = ChargedRetriever(log, start=Reset)  # type: ignore[arg-type]
    reclaim(kept, "/vm1")
    reclaim(kept, "/vm1")  # the RECLAIM is served by a fork, not failed
    assert log.via() == ["fork", "fork"] and len(cgroups) == 2


def test_a_helper_that_cannot_be_started_costs_forks_only(cgroups: list[Sequence[int]]) -> None:
    def start() -> FakeHelper:
        raise OSError(errno.EAGAIN, "fork: resource temporarily unavailable")

    log = Log()
    kept = ChargedRetriever(log, start=start)  # type: ignore[arg-type]
    for _ in range(retriever.STARTS + 2):
        reclaim(kept, "/vm1")
    assert set(log.via()) == {"fork"}
    failed = [e for level, e, _ in log.lines if level == "warning"]
    assert failed == ["retriever-start-failed"] * retriever.STARTS


def test_poll_ready_turns_a_closed_socket_into_a_lost_helper(tmp_path: Path) -> None:
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    helper = Helper(FakeProcess(), ours)  # type: ignore[arg-type]
    theirs.close()
    with pytest.raises(HelperLost):
        helper.poll_ready()
    ours.close()


# --- in the daemon ---------------------------------------------------------------------------
def test_the_daemon_retires_the_helper_once_the_update_that_crossed_the_kexec_ends(
    tmp_path: Path,
) -> None:
    """Not while vm1 is reclaimed and not yet DONE (more RECLAIMs may come), but at the end."""
    from tests.unit.test_api_after_kexec import Api, kexeced, next_luod
    from tests.unit.test_api_after_kexec import reclaim as vmm_reclaim

    helper, log = FakeHelper(), Log()

    async def scenario() -> None:
        await kexeced(tmp_path)
        async with next_luod(tmp_path, Api()) as daemon:
            daemon.retriever = ChargedRetriever(log, begun=helper)  # type: ignore[arg-type]
            socket_path = daemon.settings.socket_path
            await asyncio.to_thread(vmm_reclaim, socket_path, False)
            await asyncio.sleep(0.3)
            assert not helper.closed, "retired while the update was still reclaiming"
            with Client(socket_path) as vmm:
                await asyncio.to_thread(vmm.done, "vm1")
            await until(lambda: helper.closed)

    asyncio.run(scenario())
    retired = [f for _, e, f in log.lines if e == "retriever-retired"]
    assert len(retired) == 1 and retired[0]["why"].endswith("ended (completed)")
