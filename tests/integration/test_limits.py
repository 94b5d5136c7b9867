"""Every limit of docs/limits.md at the limit and one past it, on a subprocess luod on the
simulator (issue 13 §3), and the fd-exhaustion attacks of finding 4."""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.kernel import OwnedFd, memfd
from luod.vmm import codec
from luod.vmm.async_client import AsyncClient
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.integration.conftest import Daemon, start_daemon
from tests.integration.test_vmm_bad_input import Raw, error_of

SMALL = {"connections_per_uid": 4, "vms_per_uid": 3, "sessions": 5, "files_per_vm": 4}


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Daemon]:
    """luod with small limits from its luod.toml."""
    config = tmp_path / "luod.toml"
    config.write_text("[limits]\n" + "".join(f"{k} = {v}\n" for k, v in SMALL.items()))
    running = start_daemon(tmp_path / "luod", "--config", str(config))
    yield running
    assert running.stop() == 0


def hello(client: Raw) -> dict[str, object]:
    return client.call({"cmd": "HELLO", "version": 1})


def test_connections_per_uid_at_the_limit_and_one_more(small: Daemon) -> None:
    clients = [Raw(small.socket) for _ in range(SMALL["connections_per_uid"])]
    assert all(hello(c)["ok"] for c in clients)
    extra = Raw(small.socket)
    assert error_of(extra.reply())["code"] == "too-many-connections"
    assert extra.sock.recv(1) == b""  # then closed
    clients.pop().close()
    time.sleep(0.2)
    again = Raw(small.socket)
    assert hello(again)["ok"]
    for client in (*clients, extra, again):
        client.close()


def test_vms_per_uid_and_sessions_at_the_limit_and_one_more(small: Daemon) -> None:
    raw = Raw(small.socket)
    for n in range(SMALL["vms_per_uid"]):
        assert raw.call({"cmd": "REGISTER", "id": f"vm{n}"})["ok"]
    error = error_of(raw.call({"cmd": "REGISTER", "id": "vm-extra"}))
    assert error["code"] == "too-many-vms" and "vms_per_uid" in error["message"]
    assert raw.call({"cmd": "REGISTER", "id": "vm0"})["ok"]  # the same VM again is no new one
    assert raw.call({"cmd": "DROP", "id": "vm0"})["ok"]
    assert raw.call({"cmd": "REGISTER", "id": "vm-extra"})["ok"]
    raw.close()


def test_sessions_at_the_limit_and_one_more(tmp_path: Path) -> None:
    config = tmp_path / "luod.toml"
    config.write_text("[limits]\nsessions = 2\n")
    daemon = start_daemon(tmp_path / "luod", "--config", str(config))
    raw = Raw(daemon.socket)
    assert raw.call({"cmd": "REGISTER", "id": "a"})["ok"]
    assert raw.call({"cmd": "SUBSCRIBE", "id": "b"})["ok"]
    error = error_of(raw.call({"cmd": "SUBSCRIBE", "id": "c"}))
    assert error["code"] == "too-many-vms" and "limits.sessions" in error["message"]
    raw.close()
    assert daemon.stop() == 0


def test_files_per_vm_at_the_limit_and_one_more(small: Daemon) -> None:
    raw = Raw(small.socket)
    assert raw.call({"cmd": "REGISTER", "id": "vm1"})["ok"]
    fds = [memfd.create(f"ram{n}", 4096) for n in range(SMALL["files_per_vm"] + 1)]
    numbers = [fd.fileno() for fd in fds]
    first = {"cmd": "PRESERVE", "id": "vm1", "files": ["a", "b"]}
    assert raw.call(first, tuple(numbers[:2]))["ok"]
    over = {"cmd": "PRESERVE", "id": "vm1", "files": ["c", "d", "e"]}
    assert error_of(raw.call(over, tuple(numbers[2:])))["code"] == "too-many-files"
    [vm] = raw.call({"cmd": "LIST", "id": "vm1"})["vms"]
    assert [f["name"] for f in vm["files"]] == ["a", "b"]  # nothing of the refused request
    at = {"cmd": "PRESERVE", "id": "vm1", "files": ["c", "d"]}
    assert raw.call(at, tuple(numbers[2:4]))["ok"]
    for fd in fds:
        fd.close()
    raw.close()


def test_fds_pending_for_one_message_at_the_limit_and_one_more(daemon: Daemon) -> None:
    """Fds sent before a message's newline wait in luod: at most MAX_FDS of them (finding 4)."""
    with memfd.create("ram", 4096) as ram:
        dups = [OwnedFd(os.dup(ram.fileno())) for _ in range(codec.MAX_FDS + 1)]
        half = codec.MAX_FDS // 2
        names = [f"f{n}" for n in range(codec.MAX_FDS)]
        head, tail = json.dumps({"cmd": "PRESERVE", "id": "nosuch", "files": names})[:-1], "}\n"
        at = Raw(daemon.socket)
        at.send(head.encode(), [fd.fileno() for fd in dups[:half]])
        at.send(tail.encode(), [fd.fileno() for fd in dups[half : codec.MAX_FDS]])
        assert error_of(at.reply())["code"] == "unknown-vm"  # read and answered
        over = Raw(daemon.socket)
        over.send(head.encode(), [fd.fileno() for fd in dups[:half]])
        over.send(b" ", [fd.fileno() for fd in dups[half:]])  # MAX_FDS + 1, no newline yet
        assert error_of(over.reply())["code"] == "too-many-fds"
        assert over.sock.recv(1) == b""
        for fd in dups:
            fd.close()
        at.close()
        over.close()
    assert daemon.alive()


def test_a_client_that_sends_without_reading_holds_no_fds_in_luod(daemon: Daemon) -> None:
    """Finding 4: frames and their fds queued in luod without bound while the handler waited
    (a big PRESERVE runs in a thread); luod reached 19,873 of 20,000 fds in 0.1 s. Now luod
    reads the next frame only once it answered the last: the rest wait in the client's socket."""
    baseline = len(daemon.fds())
    big = memfd.create("big", 256 << 20)  # sparse: the preserve runs in a worker thread
    line = json.dumps({"cmd": "PRESERVE", "id": "nosuch", "files": ["a", "b", "c", "d"]})
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sender.connect(str(daemon.socket))
    sender.settimeout(5)
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _ints([big.fileno()] * 4))]
    stop = threading.Event()

    def blast() -> None:
        with_fds = (line + "\n").encode()
        while not stop.is_set():
            try:
                sender.sendmsg([with_fds], rights)
            except OSError:
                return

    thread = threading.Thread(target=blast, daemon=True)
    thread.start()
    peak = baseline
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        peak = max(peak, len(daemon.fds()))
        time.sleep(0.01)
    stop.set()
    sender.shutdown(socket.SHUT_RDWR)
    thread.join(10)
    sender.close()
    big.close()
    assert peak <= baseline + 4 * codec.MAX_FDS, f"luod held {peak - baseline} fds more"
    assert daemon.alive()


def _ints(values: list[int]) -> bytes:
    return array.array("i", values).tobytes()


def test_emfile_on_accept_backs_off_and_logs_rarely(tmp_path: Path) -> None:
    """Finding 4: silent connections used up the fd limit; ``_accept`` then busy-looped on
    EMFILE, logging 704,835 ``accept-failed`` lines in seconds. Now it backs off, logs at most
    once per ten seconds, and serves again once fds are free."""
    state = tmp_path / "luod"
    state.mkdir()
    log = state / "luod.log"
    socket_path = state / "run" / "liveupdate.sock"
    starter = (
        "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48)); "
        "sys.argv = ['luod', *sys.argv[1:]]; runpy.run_module('luod.main', run_name='__main__')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", starter, "--simulate", str(state), "--no-api"],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115
    )
    daemon = Daemon(process, state, socket_path, log)
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        assert daemon.alive() and time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    silent = []
    for _ in range(60):  # more than luod's 48 fds allow, fewer than connections_per_uid
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(socket_path))  # the backlog takes them even when luod cannot
        silent.append(sock)
    time.sleep(1.5)
    failed = [line for line in log.read_text().splitlines() if "accept-failed" in line]
    assert 1 <= len(failed) <= 2, f"{len(failed)} accept-failed lines"
    assert "Too many open files" in failed[0]
    for sock in silent:
        sock.close()
    time.sleep(0.5)
    client = Raw(socket_path)
    assert hello(client)["ok"]
    client.close()
    assert daemon.stop() == 0


@pytest.mark.parametrize("count", [codec.MAX_FDS, codec.MAX_FDS + 1])
def test_reclaim_of_a_vm_with_more_files_than_one_reply_carries(tmp_path: Path, count: int) -> None:
    """A RECLAIM reply carries at most MAX_FDS fds; files_per_vm allows more. Without names,
    luod refused nothing and sent them all: the client's recvmsg truncated the fds
    (MSG_CTRUNC) and the connection broke. Now luod answers too-many-fds for more than
    MAX_FDS (naming files works), and both client shells reclaim in batches."""
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    daemon = start_daemon(tmp_path / "luod")
    with Client(daemon.socket) as client:
        client.register("big")
        rams = [memfd.create(f"ram{n}", 4096) for n in range(count)]
        for n, ram in enumerate(rams):
            os.pwrite(ram.fileno(), f"region {n}".encode(), 0)
        for start in range(0, count, codec.MAX_FDS):
            batch = {f"r{n:03}": rams[n] for n in range(start, min(count, start + codec.MAX_FDS))}
            client.preserve("big", batch)
        for ram in rams:
            ram.close()
    with Client(daemon.socket) as operator:  # the VMM is gone: luod counts big as frozen
        operator.update(image)
        assert daemon.process.wait(timeout=30) == 0, daemon.log.read_text()
    restarted = start_daemon(tmp_path / "luod")
    raw = Raw(restarted.socket)
    reply = raw.call({"cmd": "RECLAIM", "id": "big"})
    if count > codec.MAX_FDS:
        assert error_of(reply)["code"] == "too-many-fds"
    else:
        assert reply["ok"] and len(reply["files"]) == count
    raw.close()

    async def from_async() -> list[str]:
        async with AsyncClient(restarted.socket) as client:
            got = await client.reclaim("big")
        for fd in got.values():
            fd.close()
        return sorted(got)

    assert asyncio.run(from_async()) == [f"r{n:03}" for n in range(count)]
    with Client(restarted.socket) as client:
        fds = client.reclaim("big")
        assert sorted(fds) == [f"r{n:03}" for n in range(count)]
        for n in range(count):
            assert os.pread(fds[f"r{n:03}"].fileno(), 16, 0).rstrip(b"\0") == f"region {n}".encode()
        for fd in fds.values():
            fd.close()
        client.done("big")
    assert restarted.stop() == 0
