"""The REST API as luod serves it: after the VMM socket, on RUNTIME_DIR/api.sock, mode 0660;
luoctl talks to it."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from luod.kernel import memfd
from luod.vmm.client import Client
from tests.integration.conftest import start_daemon


def test_luoctl_reads_a_running_luod(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path / "luod", api=True)
    api = tmp_path / "luod" / "run" / "api.sock"
    try:
        with Client(daemon.socket) as vmm, memfd.create("ram", 4096) as fd:
            vmm.register("vm1")
            vmm.preserve("vm1", {"ram0": fd})
        deadline = time.monotonic() + 20
        while not api.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stat.S_IMODE(api.stat().st_mode) == 0o660
        done = subprocess.run(
            [sys.executable, "-m", "luod.cli.main", "--socket", str(api), "--json", "vm", "vm1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        vm = json.loads(done.stdout)
        assert vm["id"] == "vm1" and vm["files"][0]["name"] == "ram0"
    finally:
        daemon.stop()
    assert not api.exists()


def test_a_rest_stack_that_does_not_import_costs_the_api_not_luod(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "uvloop"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('simulated: uvloop is missing')\n")
    daemon = start_daemon(tmp_path / "luod", api=True, env={"PYTHONPATH": str(broken.parent)})
    try:
        deadline = time.monotonic() + 20
        while "rest-disabled" not in daemon.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(
            json.loads(text)
            for text in daemon.log.read_text().splitlines()
            if "rest-disabled" in text
        )
        assert line["code"] == "rest-import" and "uvloop is missing" in line["message"]
        assert daemon.alive()
        with Client(daemon.socket) as vmm, memfd.create("ram", 4096) as fd:
            vmm.register("vm1")
            assert vmm.preserve("vm1", {"ram0": fd})
        assert not (tmp_path / "luod" / "run" / "api.sock").exists()
    finally:
        assert daemon.stop() == 0


def test_public_metrics_from_luod_toml_open_metrics_and_health_on_tcp(tmp_path: Path) -> None:
    """``api.public_metrics = true``: a scraper without the token gets /metrics, a load
    balancer /v1/health; everything else on TCP still needs the token."""
    token = tmp_path / "token"
    token.write_text("fleet-scrape-token-0123456789\n")
    token.chmod(0o600)
    with socket.socket() as probe:  # a free port, for a moment
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "luod.toml"
    conf.write_text(
        f'[api]\ntcp = "127.0.0.1:{port}"\ntoken_file = "{token}"\npublic_metrics = true\n'
    )
    daemon = start_daemon(tmp_path / "luod", "--config", str(conf), api=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{url}/v1/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        metrics = httpx.get(f"{url}/metrics", timeout=5)
        status = httpx.get(f"{url}/v1/status", timeout=5)
    finally:
        daemon.stop()
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert metrics.status_code == 200 and "luod_build_info{" in metrics.text
    assert status.status_code == 401 and status.json()["code"] == "unauthorized"


def test_stopping_luod_ends_the_event_stream_with_shutdown_at_once(tmp_path: Path) -> None:
    """Issue 16 §4: SIGTERM sends SHUTDOWN as the last event and closes the stream at once
    (not at uvicorn's grace period), and luod's JSON log has no traceback."""
    from luod.cli.sse import Event, EventParser

    daemon = start_daemon(tmp_path / "luod", api=True)
    api = tmp_path / "luod" / "run" / "api.sock"
    deadline = time.monotonic() + 20
    while not api.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    parser = EventParser()
    seen: list[Event] = []
    transport = httpx.HTTPTransport(uds=str(api))
    with (
        httpx.Client(transport=transport, base_url="http://luod", timeout=10) as client,
        client.stream("GET", "/v1/events") as reply,
    ):
        lines = reply.iter_lines()
        while not seen:
            if (event := parser.feed(next(lines))) is not None:
                seen.append(event)
        stopping = time.monotonic()
        daemon.process.terminate()
        for line in lines:
            if (event := parser.feed(line)) is not None:
                seen.append(event)
        ended = time.monotonic() - stopping
    assert daemon.process.wait(timeout=20) == 0
    assert [e.name for e in seen] == ["STATE", "SHUTDOWN"] and seen[1].id
    assert ended < 1.0, f"the stream ended {ended:.2f} s after SIGTERM"
    log = daemon.log.read_text()
    assert "Traceback" not in log and '"exception"' not in log
