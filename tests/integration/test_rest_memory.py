"""An unauthenticated 300 MB POST over TCP must not make luod read it (issue 13, finding 3): the
peak RSS of luod's REST worker, the process that reads HTTP (luod.rest.worker), stays within a
small bound (it was ~1 GB when FastAPI read the body before the token was checked), and luod's
own does not move."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

from tests.integration.conftest import Daemon, start_daemon
from tests.integration.test_rest_worker import worker_of

BODY_BYTES = 300 << 20
CHUNK = 1 << 20
RSS_SLACK = 64 << 20
"""The bound on growth of luod's peak RSS: uvicorn buffers at most a few chunks per connection."""


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) << 10
    raise AssertionError(f"no {field} for pid {pid}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, daemon: Daemon) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        assert daemon.alive(), daemon.log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"luod's REST API never listened on {port}")


def post_unauthenticated(port: int, size: int) -> bytes:
    """POST ``size`` bytes without a token; whatever luod answered (it may close early)."""
    head = (
        f"POST /v1/preflight HTTP/1.1\r\nHost: luod\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    chunk = b" " * CHUNK
    with socket.create_connection(("127.0.0.1", port), 30) as conn:
        conn.sendall(head)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(size // CHUNK):
                conn.sendall(chunk)
        with contextlib.suppress(ConnectionResetError):
            return conn.recv(65536)
    return b""


def peak_rss_growth(daemon: Daemon, port: int) -> tuple[int, int, bytes]:
    """How much the worker's and luod's peak RSS grew under the POST, and the answer."""
    _wait_listening(port, daemon)
    time.sleep(0.5)  # the REST stack imported, settled
    worker = worker_of(daemon)
    assert worker is not None
    pids = (worker.pid, daemon.process.pid)
    before = [_kib(pid, "VmHWM") for pid in pids]
    reply = post_unauthenticated(port, BODY_BYTES)
    time.sleep(0.5)
    worker_growth, luod_growth = (
        _kib(pid, "VmHWM") - was for pid, was in zip(pids, before, strict=False)
    )
    return worker_growth, luod_growth, reply


def test_an_unauthenticated_300_mb_post_does_not_grow_luod(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("memory-test-token-0123456789\n")
    token.chmod(0o600)
    port = _free_port()
    daemon = start_daemon(
        tmp_path / "luod",
        "--api-tcp",
        f"127.0.0.1:{port}",
        "--api-token-file",
        str(token),
        api=True,
    )
    try:
        growth, luod_growth, reply = peak_rss_growth(daemon, port)
        assert daemon.alive()
    finally:
        daemon.stop()
    print(f"the REST worker's peak RSS growth under a 300 MB POST: {growth >> 20} MiB")
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert growth < RSS_SLACK, f"the REST worker's peak RSS grew by {growth >> 20} MiB"
    assert luod_growth < 1 << 20, f"luod's own peak RSS grew by {luod_growth >> 10} KiB"
