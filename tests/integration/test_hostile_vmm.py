"""A hostile local client on the VMM socket (issue 13 §1): one message must never stop luod.

Each test names the finding it reproduces. The daemon is a subprocess luod on the simulator;
after every attack it still serves a healthy client, keeps its VM, and leaks no fd.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from luod.kernel import memfd
from luod.vmm import codec
from luod.vmm.client import Client
from tests.integration.conftest import Daemon
from tests.integration.test_vmm_bad_input import (
    Raw,
    error_of,
    settle,
    steady_fds,
    still_serving,
)

LONG = "é" * 30000
"""Two UTF-8 bytes on the wire, six once JSON escapes it: an echo of it outgrows MAX_LINE."""


def send_raw_utf8(raw: Raw, message: dict[str, Any]) -> dict[str, Any]:
    raw.send(json.dumps(message, ensure_ascii=False).encode() + b"\n")
    return raw.reply()


@pytest.fixture
def healthy(daemon: Daemon) -> Iterator[Client]:
    """Another client with a preserved VM, checked after every attack."""
    with Client(daemon.socket) as client:
        client.register("healthy")
        with memfd.create("ram", 4096) as fd:
            os.pwrite(fd.fileno(), b"healthy guest", 0)
            client.preserve("healthy", {"ram0": fd})
        yield client


@pytest.fixture
def raw(daemon: Daemon, healthy: Client) -> Iterator[Raw]:
    before = steady_fds(daemon)
    client = Raw(daemon.socket)
    yield client
    client.close()
    settle(daemon, before)
    still_serving(daemon, healthy)


@pytest.mark.parametrize(
    "message",
    [
        {"cmd": "REGISTER", "id": LONG},
        {"cmd": LONG},
        {"cmd": "PRESERVE", "id": "vm1", "files": [LONG]},
        {"cmd": "RECLAIM", "id": "vm1", "files": [LONG]},
        {"cmd": "PRESERVE", "id": "vm1", "files": [{"name": "a", "kind": LONG}]},
        {"cmd": "HELLO", "version": LONG},
    ],
    ids=["register-id", "unknown-cmd", "preserve-name", "reclaim-name", "kind", "version"],
)
def test_finding1_an_echoed_long_value_is_truncated_and_luod_lives(
    raw: Raw, message: dict[str, Any]
) -> None:
    """Finding 1: the error message echoed the whole bad value; the reply outgrew 64 KiB and
    the ValueError of ``codec.encode`` took the daemon down."""
    reply = send_raw_utf8(raw, message)
    error = error_of(reply)
    assert error["code"] in ("bad-id", "unknown-command", "bad-name", "bad-request")
    assert len(json.dumps(reply)) < 2048
    assert raw.call({"cmd": "HELLO"})["ok"]  # the same connection still works


def test_finding1_the_largest_line_luod_accepts_gets_a_short_answer(raw: Raw) -> None:
    """Finding 1, at the line limit: a frame of exactly MAX_LINE bytes (newline excluded)
    full of non-ASCII text is answered, not fatal."""
    head = '{"cmd":"REGISTER","id":"'
    filler = "é" * ((codec.MAX_LINE - len(head) - 2) // 2)
    line = (head + filler + '"}').encode()
    line += b" " * (codec.MAX_LINE - len(line))
    assert len(line) == codec.MAX_LINE
    raw.send(line + b"\n")
    assert error_of(raw.reply())["code"] == "bad-id"
    assert raw.call({"cmd": "HELLO"})["ok"]


def test_finding10_an_o_path_fd_is_bad_fd(raw: Raw) -> None:
    """Finding 10: an O_PATH fd gave ``internal`` and a traceback in luod's log."""
    assert raw.call({"cmd": "REGISTER", "id": "o-path"})["ok"]
    with memfd.create("ram", 4096) as fd:
        path_only = os.open(f"/proc/self/fd/{fd.fileno()}", os.O_PATH | os.O_CLOEXEC)
        try:
            message = {"cmd": "PRESERVE", "id": "o-path", "files": ["ram0"]}
            error = error_of(raw.call(message, (path_only,)))
        finally:
            os.close(path_only)
    assert (error["code"], error["errno_name"]) == ("bad-fd", "EBADF")
    assert raw.call({"cmd": "DROP", "id": "o-path"})["ok"]


def test_finding8_a_memfd_and_a_pipe_preserve_nothing_and_a_retry_works(raw: Raw) -> None:
    """Finding 8: the memfd stayed preserved after the pipe's luo-enoent; a retry got
    file-exists."""
    assert raw.call({"cmd": "REGISTER", "id": "half"})["ok"]
    reader, writer = os.pipe()
    with memfd.create("ram", 4096) as fd:
        try:
            both = {"cmd": "PRESERVE", "id": "half", "files": ["ram0", "ram1"]}
            error = error_of(raw.call(both, (fd.fileno(), reader)))
        finally:
            os.close(reader)
            os.close(writer)
        assert error["code"] == "luo-enoent"
        [vm] = raw.call({"cmd": "LIST", "id": "half"})["vms"]
        assert vm["files"] == []
        retry = raw.call({"cmd": "PRESERVE", "id": "half", "files": ["ram0"]}, (fd.fileno(),))
    assert retry["ok"]
    assert raw.call({"cmd": "DROP", "id": "half"})["ok"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"version": 1e400}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"version": 1, "boot_id": "b", "release": "r", "liveupdate_number": 0, "vms": [{"id":'
        b' "../../etc/passwd", "owner": {"uid": 0, "gid": 0, "pid": 1}, "mode": "handover",'
        b' "state": "registered"}]}',
    ],
    ids=["1e400", "deep", "path-id"],
)
def test_finding12_a_corrupt_manifest_stops_luod_cleanly(tmp_path: Path, content: bytes) -> None:
    """Finding 12: overflowing numbers and deep nesting ended in a traceback; a vm id that is a
    path was accepted. Now luod refuses to start, says manifest-corrupt, and exits 1."""
    state = tmp_path / "luod"
    state.mkdir()
    (state / "manifest.json").write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "luod", "--simulate", str(state), "--no-api"],
        capture_output=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1 and b"manifest-corrupt" in output
    assert b"Traceback" not in output
