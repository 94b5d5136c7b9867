"""Losing the fd keeper (issue 13, finding 5): a keeper killed with -9 is replaced, the new one
gets every session again, nothing leaks, the loss is logged at error level and shows in the
custody health; a session whose deposit fails is rolled back (its id stays usable)."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from luod.core import custody_guard
from luod.core.access import Peer
from luod.core.model import Mode
from luod.core.registry import Registry
from luod.custody.keeper_client import KeeperCustody
from luod.custody.keeper_wire import encode_ok
from luod.custody.memory import MemoryCustody
from luod.daemon.daemon import Daemon
from luod.daemon.settings import Settings
from luod.errors import LuodError
from luod.kernel import SupportsFileno
from tests.integration.test_keeper import keeper_dir, path, subreaper, wait_gone

__all__ = ["keeper_dir", "path", "subreaper"]
ROOT = Peer(0, 0, os.getpid())


@pytest.fixture
def daemon(tmp_path: Path, path: Path) -> Iterator[Daemon]:
    luod = Daemon(Settings.simulated(tmp_path / "luod"), custody=KeeperCustody(path))
    luod.startup(lambda _update: None)  # type: ignore[arg-type,return-value]
    yield luod
    luod.registry.close()
    luod.shutdown()


def _held_by_keeper(path: Path) -> set[str]:
    other = KeeperCustody(path, start=False)
    try:
        fds = other.recover()
    finally:
        other.close()
    for fd in fds.values():
        fd.close()
    return set(fds)


def _kill_keeper(custody: KeeperCustody) -> None:
    pid = custody.keeper_pid
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)


def test_a_killed_keeper_is_replaced_and_given_every_session(daemon: Daemon, path: Path) -> None:
    registry, custody = daemon.registry, daemon.custody
    assert isinstance(custody, KeeperCustody)
    registry.register(ROOT, "vm1", Mode.HANDOVER)
    first = custody.keeper_pid
    _kill_keeper(custody)
    with capture_logs() as logs:
        registry.register(ROOT, "vm2", Mode.HANDOVER)
    assert custody.keeper_pid != first
    assert _held_by_keeper(path) == {"luod.vm1", "luod.vm2"}
    assert [e["log_level"] for e in logs if e["event"] == "custody-lost"] == ["error"]
    health = registry.custody_health
    assert (health.healthy, health.renewals, health.kind) == (True, 1, "keeper")


def test_the_periodic_check_replaces_a_killed_keeper_before_anyone_asks(
    daemon: Daemon, path: Path
) -> None:
    registry, custody = daemon.registry, daemon.custody
    assert isinstance(custody, KeeperCustody)
    registry.register(ROOT, "vm1", Mode.HANDOVER)
    _kill_keeper(custody)
    health = registry.check_custody()
    assert health.healthy and health.renewals == 1
    assert _held_by_keeper(path) == {"luod.vm1"}
    registry.drop(ROOT, "vm1")  # withdraw works on the new keeper
    assert _held_by_keeper(path) == set()


class BrokenCustody(MemoryCustody):
    """Memory custody whose custodian can be 'killed' and cannot be renewed while broken."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def deposit(self, name: str, fd: SupportsFileno) -> None:
        if self.broken:
            raise LuodError("custody-unavailable", "the custodian is gone")
        super().deposit(name, fd)

    def renew(self) -> None:
        if self.broken:
            raise LuodError("custody-unavailable", "no custodian can be started")


def test_a_failed_deposit_rolls_the_registration_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(custody_guard, "RETRY_FIRST", 0.0)  # check again at once
    custody = BrokenCustody()
    luod = Daemon(Settings.simulated(tmp_path / "luod"), custody=custody)
    luod.startup(lambda _update: None)  # type: ignore[arg-type,return-value]
    registry: Registry = luod.registry
    try:
        custody.broken = True
        with capture_logs() as logs, pytest.raises(LuodError) as failed:
            registry.register(ROOT, "vm1", Mode.HANDOVER)
        assert failed.value.code == "custody-unavailable"
        assert {"custody-lost", "custody-renew-failed"} <= {e["event"] for e in logs}
        assert registry.open_sessions() == 0 and "vm1" not in registry.vms
        assert not registry.custody_health.healthy
        custody.broken = False
        registry.register(ROOT, "vm1", Mode.HANDOVER)  # not session-exists: nothing leaked
        assert registry.open_sessions() == 1 and "luod.vm1" in custody
        assert not registry.custody_health.healthy  # until every session was handed over
        assert registry.check_custody().healthy
        assert registry.custody_health.renewals == 1
    finally:
        registry.close()
        luod.shutdown()


def test_a_keeper_of_another_uid_gets_no_fd(tmp_path: Path) -> None:
    """A socket planted at keeper.sock by uid 65534 answers PING like a keeper: luod checks
    its uid (SO_PEERCRED) and hands it nothing."""
    where = tmp_path / "keeper.sock"
    got_fds, report = os.pipe()
    ready, listening = os.pipe()
    child = os.fork()
    if child == 0:  # the fake keeper: bound by us, listening as uid 65534
        try:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            listener.bind(str(where))
            os.setgid(65534)
            os.setuid(65534)
            listener.listen(1)
            os.write(listening, b"up")
            listener.settimeout(10)
            conn, _ = listener.accept()
            while True:
                data, ancdata, _flags, _ = conn.recvmsg(4096, socket.CMSG_SPACE(16))
                if ancdata:
                    os.write(report, b"fd")
                if not data:
                    break
                conn.send(encode_ok("1"))
        finally:
            os._exit(0)
    os.close(report)
    os.close(listening)
    assert os.read(ready, 2) == b"up"
    os.close(ready)
    try:
        with pytest.raises(LuodError) as refused:
            KeeperCustody(where, start=False)
        assert refused.value.code == "custody-unavailable"
        assert "uid 65534" in refused.value.message
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert os.read(got_fds, 16) == b""  # it never received an fd
    os.close(got_fds)


def test_the_kexec_step_deposits_session_luod_with_a_new_keeper(daemon: Daemon, path: Path) -> None:
    """The gap an update fell into: a dead keeper made the kexec step's deposit fail, so every
    later update ended failed."""
    registry, custody = daemon.registry, daemon.custody
    assert isinstance(custody, KeeperCustody)
    registry.register(ROOT, "vm1", Mode.HANDOVER)
    _kill_keeper(custody)
    registry.begin_kexec()
    try:
        assert _held_by_keeper(path) == {"luod.vm1", "luod"}
    finally:
        registry.end_kexec()


def test_while_no_custodian_can_be_had_the_checks_back_off(tmp_path: Path) -> None:
    custody = BrokenCustody()
    luod = Daemon(Settings.simulated(tmp_path / "luod"), custody=custody)
    luod.startup(lambda _update: None)  # type: ignore[arg-type,return-value]
    try:
        custody.broken = True
        with pytest.raises(LuodError):
            luod.registry.register(ROOT, "vm1", Mode.HANDOVER)
        custody.broken = False  # came back, but the pause after the failure is not over
        with capture_logs() as logs:
            assert not luod.registry.check_custody().healthy
        assert logs == []  # no retry, no log line, during the pause
    finally:
        luod.registry.close()
        luod.shutdown()
