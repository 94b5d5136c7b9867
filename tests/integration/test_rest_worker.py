"""luod serves its REST API from a worker process (luod.rest.worker): the HTTP stack is not in
luod's process, the worker holds none of the guests' memory, a worker that dies is replaced,
and a luod that dies takes its worker with it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from luod.kernel import memfd
from luod.rest import privileges
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.integration.conftest import Daemon, start_daemon

CAP_SYS_BOOT = 22  # linux/capability.h
HTTP_STACK = ("pydantic_core", "uvloop", "httptools")  # their shared objects, in /proc/PID/maps


def wait_for(what: Callable[[], object], timeout: float = 30, step: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := what():
            return found
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s: {what}")


def worker_of(daemon: Daemon) -> psutil.Process | None:
    for child in psutil.Process(daemon.process.pid).children():
        try:
            if "luod.rest.worker" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def status(api: Path) -> dict[str, object]:
    transport = httpx.HTTPTransport(uds=str(api))
    with httpx.Client(transport=transport, base_url="http://luod", timeout=10) as http:
        answer = http.get("/v1/status")
        answer.raise_for_status()
        return dict(answer.json())


def mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def fd_targets(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return found


def serving(tmp_path: Path) -> tuple[Daemon, Path, psutil.Process]:
    daemon = start_daemon(tmp_path / "luod", api=True)
    api = tmp_path / "luod" / "run" / "api.sock"
    wait_for(api.exists)
    worker = worker_of(daemon)
    assert worker is not None, daemon.log.read_text()
    return daemon, api, worker


def test_the_http_stack_runs_in_a_worker_that_holds_no_guest_memory(tmp_path: Path) -> None:
    daemon, api, worker = serving(tmp_path)
    try:
        with Client(daemon.socket) as vmm, memfd.create("guest-ram", 4096) as fd:
            vmm.register("vm1")
            vmm.preserve("vm1", {"ram0": fd})
        assert status(api)["vms"] == 1
        luod_maps, worker_maps = mapped(daemon.process.pid), mapped(worker.pid)
        for library in HTTP_STACK:
            assert library in worker_maps
            assert library not in luod_maps, f"{library} is loaded in luod's own process"
        assert any("guest-ram" in target for target in fd_targets(daemon.process.pid))
        held = fd_targets(worker.pid)
        assert not [t for t in held if "memfd:" in t or "liveupdate" in t], held
        assert len(held) < 24, held  # the link, the REST socket, the loop's own, stdio
    finally:
        assert daemon.stop() == 0
    assert not api.exists()
    assert not worker.is_running()


def test_a_worker_that_dies_is_replaced_and_luod_serves_vmms_meanwhile(tmp_path: Path) -> None:
    daemon, api, worker = serving(tmp_path)
    try:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        with Client(daemon.socket) as vmm, memfd.create("ram", 4096) as fd:
            vmm.register("vm1")
            assert vmm.preserve("vm1", {"ram0": fd})
        replaced = wait_for(lambda: (w := worker_of(daemon)) is not None and w.pid != worker.pid)
        assert replaced
        assert wait_for(lambda: _answers(api))["vms"] == 1  # type: ignore[index]
        lines = [json.loads(line) for line in daemon.log.read_text().splitlines()]
        [exited] = [line for line in lines if line.get("event") == "rest-worker-exited"]
        assert exited["status"] == -signal.SIGKILL and exited["code"] == "rest-worker"
        assert exited["hint"]
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0


def _answers(api: Path) -> dict[str, object] | None:
    try:
        return status(api)
    except (httpx.HTTPError, OSError):
        return None


def test_a_worker_does_not_outlive_luod(tmp_path: Path) -> None:
    """luod killed outright: its worker sees the link close, stops serving and removes the
    socket it made, so nothing answers for a luod that is gone."""
    daemon, api, worker = serving(tmp_path)
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)
    worker.wait(10)
    assert not api.exists()


def test_update_events_cross_the_link_in_order(tmp_path: Path) -> None:
    """``GET /v1/events`` through the worker: the state first, then every PHASE of an update
    (simulator, no VM: it runs to the simulated kexec), then SHUTDOWN as luod stops."""
    daemon, api, _ = serving(tmp_path)
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    transport = httpx.HTTPTransport(uds=str(api))
    events: list[dict[str, object]] = []
    try:
        with (
            httpx.Client(transport=transport, base_url="http://luod", timeout=30) as http,
            http.stream("GET", "/v1/events") as stream,
        ):
            lines = stream.iter_lines()
            started = http.post("/v1/update", json={"kernel": str(image), "reuse_cmdline": True})
            assert started.status_code == 202, started.text
            for line in lines:
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                if events and events[-1].get("event") == "SHUTDOWN":
                    break
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.process.wait(30)  # the simulated kexec ends luod
        daemon.stop()
    kinds = [e.get("event") for e in events]
    assert kinds[0] == "STATE", kinds
    phases = [e.get("to") for e in events if e.get("event") == "PHASE"]
    assert phases[:3] == ["preparing", "prepared", "freezing"], phases
    assert "rebooting" in phases and kinds[-1] == "SHUTDOWN", kinds


def test_metrics_describe_luods_process_and_the_workers_apart(tmp_path: Path) -> None:
    """``process_*`` are luod's (the process holding the sessions: its fds, its memory), not
    those of the worker that answers the scrape; the worker's are ``luod_rest_worker_*``."""
    daemon, api, worker = serving(tmp_path)
    try:
        with Client(daemon.socket) as vmm:
            for index in range(8):  # luod holds their sessions and files: more fds than the worker
                with memfd.create("ram", 4096) as fd:
                    vmm.register(f"vm{index}")
                    vmm.preserve(f"vm{index}", {"ram0": fd})
        transport = httpx.HTTPTransport(uds=str(api))
        with httpx.Client(transport=transport, base_url="http://luod", timeout=10) as http:
            text = http.get("/metrics").text
        values = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        luod_fds, worker_fds = len(fd_targets(daemon.process.pid)), len(fd_targets(worker.pid))
        assert luod_fds > worker_fds + 10
        assert abs(values["process_open_fds"] - luod_fds) <= 2, (values, luod_fds)
        assert abs(values["luod_rest_worker_process_open_fds"] - worker_fds) <= 2
        luod_rss = psutil.Process(daemon.process.pid).memory_info().rss
        assert abs(values["process_resident_memory_bytes"] - luod_rss) < 4 << 20
        assert values["luod_rest_worker_process_resident_memory_bytes"] > 0
    finally:
        assert daemon.stop() == 0


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} for {pid}")


def test_the_worker_cannot_boot_a_kernel_nor_regain_what_it_dropped(tmp_path: Path) -> None:
    """The worker keeps CAP_CHOWN alone (luod.rest.privileges) and has no_new_privs, so no
    exec gives it back CAP_SYS_BOOT; luod keeps its own capabilities."""
    daemon, api, worker = serving(tmp_path)
    try:
        kept = 1 << privileges.CAP_CHOWN
        for field in ("CapEff", "CapPrm", "CapInh"):
            assert int(status_field(worker.pid, field), 16) & ~kept == 0, field
        assert status_field(worker.pid, "NoNewPrivs") == "1"
        if os.geteuid() == 0:  # luod as root (CI): it still may kexec
            assert int(status_field(daemon.process.pid, "CapEff"), 16) >> CAP_SYS_BOOT & 1
        assert status(api)["vms"] == 0  # and the API serves
    finally:
        assert daemon.stop() == 0
