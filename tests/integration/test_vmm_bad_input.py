"""Bad input on the VMM socket: each gets a clear error with a code (and errno when the kernel
said no), luod leaks no fd, keeps serving the other clients, and loses no session."""

from __future__ import annotations

import array
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from luod.kernel import OwnedFd, memfd
from luod.vmm.client import Client
from tests.integration.conftest import Daemon, start_daemon

SETTLE = 5.0
STEADY = 0.3


class Raw:
    """A client that can send anything, fds included."""

    def __init__(self, path: Any) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(10)
        self.buffer = b""

    def send(self, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        self.sock.sendmsg([data], rights if fds else [])

    def reply(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by luod")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return dict(json.loads(line))

    def call(self, message: dict[str, Any], fds: tuple[int, ...] = ()) -> dict[str, Any]:
        self.send(json.dumps(message).encode() + b"\n", fds)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def healthy(daemon: Daemon) -> Iterator[Client]:
    """Another client with a preserved VM, checked after every bad input."""
    with Client(daemon.socket) as client:
        client.register("healthy")
        with memfd.create("ram", 4096) as fd:
            os.pwrite(fd.fileno(), b"healthy guest", 0)
            client.preserve("healthy", {"ram0": fd})
        yield client


def settle(daemon: Daemon, before: set[str]) -> None:
    """luod's fd table returns to what it was (no leak) and stays so for STEADY seconds, within
    SETTLE. A leaked fd stays; a module that luod imports at a client's hang-up opens its file
    for a moment, and a single read could catch it (CI: "leaked fds: set()")."""
    now = _steady(daemon, before)
    assert now == before, f"luod leaked fds: {sorted(now - before)}, lost {sorted(before - now)}"


def steady_fds(daemon: Daemon) -> set[str]:
    """luod's fd table once it stayed the same for STEADY seconds: the baseline ``settle``
    compares with. A single read could catch an fd of a moment: the simulator's watcher thread
    closes a session pipe's end after the reply that made it (CI: "lost ['10']")."""
    return _steady(daemon, None)


def _steady(daemon: Daemon, want: set[str] | None) -> set[str]:
    """The fd table once it stayed the same for STEADY seconds (and equal to ``want``, when
    given), or as it is after SETTLE."""
    deadline = time.monotonic() + SETTLE
    last, since = daemon.fds(), time.monotonic()
    while time.monotonic() < deadline:
        if want in (None, last) and time.monotonic() - since >= STEADY:
            return last
        time.sleep(0.02)
        if (now := daemon.fds()) != last:
            last, since = now, time.monotonic()
    return last


def still_serving(daemon: Daemon, healthy: Client) -> None:
    assert daemon.alive()
    [vm] = healthy.list("healthy")
    assert vm["state"] == "preserved" and vm["files"][0]["name"] == "ram0"


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["ok"] is False, reply
    error = reply["error"]
    assert error["code"] and error["message"] and "hint" in error
    return dict(error)


@pytest.fixture
def raw(daemon: Daemon, healthy: Client) -> Iterator[Raw]:
    before = steady_fds(daemon)
    client = Raw(daemon.socket)
    yield client
    client.close()
    settle(daemon, before)
    still_serving(daemon, healthy)


def test_malformed_json(raw: Raw) -> None:
    raw.send(b'{"cmd": "REGISTER", "id": \n')
    assert error_of(raw.reply())["code"] == "bad-json"
    assert raw.call({"cmd": "HELLO"})["ok"]  # the connection survives


def test_oversized_line_closes_the_connection(raw: Raw) -> None:
    raw.send(b"x" * (64 * 1024 + 10))
    assert error_of(raw.reply())["code"] == "line-too-long"
    with pytest.raises(ConnectionError):
        raw.reply()


def test_unknown_verb(raw: Raw) -> None:
    error = error_of(raw.call({"cmd": "FLY"}))
    assert error["code"] == "unknown-command" and "PRESERVE" in error["hint"]


def test_bad_vm_id(raw: Raw) -> None:
    assert error_of(raw.call({"cmd": "REGISTER", "id": "../etc"}))["code"] == "bad-id"


def test_fds_without_a_verb_that_takes_them(raw: Raw) -> None:
    with memfd.create("stray", 4096) as fd:
        error = error_of(raw.call({"cmd": "HELLO"}, (fd.fileno(),)))
    assert error["code"] == "unexpected-fds"


def test_too_many_fds(raw: Raw) -> None:
    fds = [memfd.create(f"f{i}", 4096) for i in range(65)]
    files = [f"f{i}" for i in range(65)]
    try:
        raw.send(
            json.dumps({"cmd": "PRESERVE", "id": "x1", "files": files}).encode() + b"\n",
            [fd.fileno() for fd in fds],
        )
        assert error_of(raw.reply())["code"] in ("too-many-fds", "bad-request")
    finally:
        for fd in fds:
            fd.close()


def test_a_pipe_given_as_ram_is_refused_by_the_kernel(raw: Raw) -> None:
    assert raw.call({"cmd": "REGISTER", "id": "pipe-vm"})["ok"]
    reader, writer = os.pipe()
    try:
        error = error_of(
            raw.call({"cmd": "PRESERVE", "id": "pipe-vm", "files": ["ram0"]}, (reader,))
        )
    finally:
        os.close(reader)
        os.close(writer)
    assert (error["code"], error["errno"]) == ("luo-enoent", 2)
    assert "handler" in error["hint"]
    assert raw.call({"cmd": "DROP", "id": "pipe-vm"})["ok"]


def test_the_same_memfd_twice_is_ebusy(raw: Raw) -> None:
    assert raw.call({"cmd": "REGISTER", "id": "twice"})["ok"]
    with memfd.create("ram", 4096) as fd:
        first = raw.call({"cmd": "PRESERVE", "id": "twice", "files": ["a"]}, (fd.fileno(),))
        second = raw.call({"cmd": "PRESERVE", "id": "twice", "files": ["b"]}, (fd.fileno(),))
    assert first["ok"]
    error = error_of(second)
    assert (error["code"], error["errno"]) == ("luo-ebusy", 16)
    assert raw.call({"cmd": "DROP", "id": "twice"})["ok"]


def test_fd_count_mismatch(raw: Raw) -> None:
    assert raw.call({"cmd": "REGISTER", "id": "mismatch"})["ok"]
    with memfd.create("ram", 4096) as fd:
        message = {"cmd": "PRESERVE", "id": "mismatch", "files": ["a", "b"]}
        assert error_of(raw.call(message, (fd.fileno(),)))["code"] == "fd-count-mismatch"
    assert raw.call({"cmd": "DROP", "id": "mismatch"})["ok"]


def test_a_client_that_disconnects_mid_message(raw: Raw) -> None:
    with memfd.create("ram", 4096) as fd:
        raw.send(b'{"cmd": "PRESERVE", "id": "half", "fi', (fd.fileno(),))
    raw.close()  # the fixture checks that luod closed the fd it had received


def foreign_call(daemon: Daemon) -> dict[str, Any]:
    """REGISTER the healthy VM's id from uid/gid 65534 (a forked child)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(reader)
        os.setgid(65534)
        os.setuid(65534)
        try:
            reply = Raw(daemon.socket).call({"cmd": "REGISTER", "id": "healthy"})
        except Exception as exc:
            reply = {"exception": repr(exc)}
        os.write(writer, json.dumps(reply).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    with OwnedFd(reader) as fd:
        return dict(json.loads(os.read(fd.fileno(), 65536)))


def test_a_foreign_uid_cannot_even_connect_to_the_0660_socket(daemon: Daemon) -> None:
    assert "PermissionError" in foreign_call(daemon)["exception"]


def test_a_foreign_uid_is_refused_by_peer_credentials(tmp_path: Path) -> None:
    public = Path(f"/tmp/luod-test-{os.getpid()}.sock")  # reachable by uid 65534
    daemon = start_daemon(tmp_path / "luod", socket_path=public)
    try:
        with Client(daemon.socket) as client:
            client.register("healthy")
            before = steady_fds(daemon)
            os.chmod(daemon.socket, 0o666)  # a too-open socket must not be the only guard
            error = error_of(foreign_call(daemon))
            assert error["code"] == "not-allowed" and "65534" in error["message"]
            settle(daemon, before)
            assert client.list("healthy")[0]["state"] == "registered"
    finally:
        daemon.stop()
