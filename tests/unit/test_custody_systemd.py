"""SystemdFdStore and sdnotify on real sockets: the datagrams systemd would get, and the fds it
passes back (``LISTEN_FDS``) in a real inherited layout (a child with fds at 3, 4, 5)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.custody import sdnotify
from luod.custody.fdstore import SystemdFdStore, available
from luod.errors import LuodError
from tests.unit.test_custody import FakeFdStore, fake_store, fd_guard, identity, memfd

__all__ = ["fake_store", "fd_guard"]  # fixtures shared with test_custody.py

STORE = "FDSTORE=1\nFDNAME={}\nFDPOLL=0"
REMOVE = "FDSTOREREMOVE=1\nFDNAME={}"
BARRIER = "BARRIER=1"


@pytest.fixture
def store(fake_store: FakeFdStore) -> Iterator[SystemdFdStore]:
    custody = SystemdFdStore()
    yield custody
    custody.close()


def sent(fake_store: FakeFdStore) -> list[str]:
    fake_store.settle()
    return [text for text in fake_store.messages if text != BARRIER]


def test_deposit_sends_fdstore_with_the_fd(fake_store: FakeFdStore, store: SystemdFdStore) -> None:
    with memfd(b"ram") as fd:
        store.deposit("luod.vm1", fd)
        assert sent(fake_store) == [STORE.format("luod.vm1")]
        [(name, held)] = fake_store.stored
        assert (name, identity(held)) == ("luod.vm1", identity(fd))


def test_deposit_again_removes_then_stores(fake_store: FakeFdStore, store: SystemdFdStore) -> None:
    with memfd(b"a") as first, memfd(b"b") as second:
        store.deposit("luod.vm1", first)
        store.deposit("luod.vm1", second)
        assert sent(fake_store) == [
            STORE.format("luod.vm1"),
            REMOVE.format("luod.vm1"),
            STORE.format("luod.vm1"),
        ]
        assert [identity(fd) for _name, fd in fake_store.stored] == [identity(second)]


def test_withdraw_sends_fdstoreremove(fake_store: FakeFdStore, store: SystemdFdStore) -> None:
    with memfd(b"") as fd:
        store.deposit("luod.vm1", fd)
    store.withdraw("luod.vm1")
    assert sent(fake_store) == [STORE.format("luod.vm1"), REMOVE.format("luod.vm1")]
    assert fake_store.stored == []


def test_close_leaves_the_store_alone(fake_store: FakeFdStore, store: SystemdFdStore) -> None:
    with memfd(b"") as fd:
        store.deposit("luod.vm1", fd)
    store.close()
    assert sent(fake_store) == [STORE.format("luod.vm1")]
    assert fake_store.names() == ["luod.vm1"]


def test_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"luod-test-{uuid.uuid4().hex}"
    fake = FakeFdStore("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    monkeypatch.setenv("FDSTORE", "1")
    store = SystemdFdStore()
    try:
        with memfd(b"") as fd:
            store.deposit("luod", fd)
        fake.settle()
        assert fake.names() == ["luod"]
    finally:
        store.close()
        fake.close()


def test_a_full_store_is_refused_before_sending(
    fake_store: FakeFdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FDSTORE", "1")
    store = SystemdFdStore()
    with memfd(b"") as fd:
        store.deposit("luod.vm1", fd)
        store.deposit("luod.vm1", fd)  # replacing needs no room
        with pytest.raises(LuodError) as caught:
            store.deposit("luod.vm2", fd)
    store.close()
    assert caught.value.code == "custody-full"
    assert "FileDescriptorStoreMax=" in caught.value.hint
    fake_store.settle()
    assert fake_store.names() == ["luod.vm1"]


def test_an_unreachable_manager_is_an_error_and_nothing_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    monkeypatch.setenv("FDSTORE", "8")
    store = SystemdFdStore()
    with memfd(b"") as fd, pytest.raises(LuodError) as caught:
        store.deposit("luod.vm1", fd)
    assert (caught.value.code, caught.value.errno) == ("custody-unavailable", errno.ENOENT)
    assert store.recover() == {}
    store.close()


@pytest.mark.parametrize(
    ("env", "problem"),
    [({"FDSTORE": "8"}, "NOTIFY_SOCKET is not set"), ({"NOTIFY_SOCKET": "/x"}, "FDSTORE")],
)
def test_without_a_store_systemd_custody_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str
) -> None:
    for variable in ("NOTIFY_SOCKET", "FDSTORE"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(LuodError, match=problem) as caught:
        SystemdFdStore()
    assert caught.value.code == "custody-unavailable"


@pytest.mark.parametrize(
    ("notify_socket", "fdstore", "expected"),
    [
        ("/run/systemd/notify", "16", True),
        ("@abstract", "1", True),
        (None, "16", False),
        ("/run/systemd/notify", None, False),
        ("/run/systemd/notify", "0", False),
        ("/run/systemd/notify", "many", False),
        ("vsock:2:1234", "16", False),
    ],
)
def test_available_needs_a_notify_socket_and_a_store(
    monkeypatch: pytest.MonkeyPatch, notify_socket: str | None, fdstore: str | None, expected: bool
) -> None:
    for variable, value in (("NOTIFY_SOCKET", notify_socket), ("FDSTORE", fdstore)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    assert available() is expected


def test_notify_sends_the_state(fake_store: FakeFdStore) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=serving")
    assert sent(fake_store) == ["READY=1\nSTATUS=serving"]


def test_notify_without_a_manager_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.notify_barrier() is False


def test_barrier_times_out_while_the_manager_holds_the_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as silent:
        silent.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        with pytest.raises(TimeoutError, match="BARRIER=1"):
            sdnotify.notify_barrier(timeout=0.05)
        _data, fds, _flags, _addr = socket.recv_fds(silent, 64, 1)
        os.close(fds[0])


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}, ["a", "b"]),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, ["unknown", "unknown"]),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}, ["unknown", "unknown"]),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, []),
        ({"LISTEN_PID": "43", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}, []),
        ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}, []),
    ],
)
def test_parse_listen_env(env: dict[str, str], names: list[str]) -> None:
    assert sdnotify.parse_listen_env(env, 42) == names


def test_parse_listen_env_refuses_a_bad_count() -> None:
    with pytest.raises(ValueError, match="LISTEN_FDS='two'"):
        sdnotify.parse_listen_env({"LISTEN_PID": "42", "LISTEN_FDS": "two"}, 42)


# Runs in the child: moves the passed fds to 3, 4, 5 (inheritable, as systemd passes them),
# sets LISTEN_PID to its own pid (or its parent's: fds meant for someone else), then execs.
SHIM = """
import fcntl, os, sys
given = [int(n) for n in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in given]
for fd in given:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid() if sys.argv[3] == "self" else os.getppid())
os.execv(sys.executable, [sys.executable, "-c", sys.argv[2]])
"""

CHILD = """
import fcntl, json, os
from luod.custody import sdnotify
from luod.custody.fdstore import SystemdFdStore
cloexec = [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd in (3, 4, 5)]
first, again = sdnotify.listen_fds(), sdnotify.listen_fds()
store = SystemdFdStore()
recovered = store.recover()
print(json.dumps({
    "cloexec_before": cloexec,
    "cloexec_after": [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd in (3, 4, 5)],
    "same_objects": all(a is b for a, b in zip(first, again)) and len(first) == len(again),
    "recovered": {n: [os.fstat(fd.fileno()).st_ino, os.pread(fd.fileno(), 16, 0).decode()]
                  for n, fd in recovered.items()},
    "left": [[n, fd.fileno(), sdnotify.is_socket(fd)] for n, fd in sdnotify.listen_fds()
             if not fd.closed],
    "env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}))
"""


def run_with_listen_fds(tmp_path: Path, whose: str) -> dict[str, object]:
    with memfd(b"vm1 ram") as vm1, memfd(b"manifest") as state:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with listener:
            fds = [vm1.fileno(), listener.fileno(), state.fileno()]
            env = dict(os.environ, LISTEN_FDS="3", LISTEN_FDNAMES="luod.vm1:vmm:luod")
            env.update(NOTIFY_SOCKET=str(tmp_path / "notify"), FDSTORE="8")
            done = subprocess.run(
                [sys.executable, "-c", SHIM, ",".join(map(str, fds)), CHILD, whose],
                pass_fds=fds, env=env, capture_output=True, text=True, timeout=30,
                cwd=Path(__file__).resolve().parents[2], check=False,
            )  # fmt: skip
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout)
        result["expected"] = {
            "luod.vm1": [os.fstat(vm1.fileno()).st_ino, "vm1 ram"],
            "luod": [os.fstat(state.fileno()).st_ino, "manifest"],
        }
        return result


def test_recover_takes_the_passed_fds_but_not_the_sockets(tmp_path: Path) -> None:
    result = run_with_listen_fds(tmp_path, "self")
    assert result["recovered"] == result["expected"]  # same inodes, same content
    assert result["left"] == [["vmm", 4, True]]  # for the socket-activation code
    assert result["cloexec_before"] == [False, False, False]
    assert result["cloexec_after"] == [True, True, True]
    assert result["same_objects"] is True
    assert result["env"] == []


def test_fds_passed_to_another_pid_are_left_alone(tmp_path: Path) -> None:
    result = run_with_listen_fds(tmp_path, "parent")
    assert result["recovered"] == {}
    assert result["left"] == []
    assert result["cloexec_after"] == [False, False, False]
    assert result["env"] == []  # never passed on to children either


def test_the_ready_at_exec_switch_and_the_watchdog_length_from_the_environment() -> None:
    assert sdnotify.ready_at_exec({}) is True
    assert [sdnotify.ready_at_exec({"LUOD_READY_AT_EXEC": v}) for v in ("no", " No ", "0")] == [
        False
    ] * 3
    assert sdnotify.ready_at_exec({"LUOD_READY_AT_EXEC": "maybe"}) is None
    pid = str(os.getpid())
    assert sdnotify.watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 30000000
    assert sdnotify.watchdog_usec({"WATCHDOG_USEC": "30000000"}) == 30000000
    assert sdnotify.watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_usec({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_usec({}) is None
