"""``luoctl qualify start --qemu-canary`` through a running luod on the simulator (issue 14 §1):
a real QEMU guest (the host's QEMU, TCG, under luod-qemu) crosses each simulated kexec of the
chain A,B,A and is checked after each over QMP (restored, RAM intact, never reset, running
on); a canary that cannot start fails a check, and a host without QEMU is refused, with a code
and a hint; luod keeps running."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from luod.core import holds
from luod.vmm.client import Client
from tests.integration.conftest import Daemon, start_daemon
from tests.integration.test_qualify_sim import SMALL, ctl, images, kexeced

__all__ = ["images"]  # the fixture
QEMU_CHECKS = {
    "qemu canary: restored", "qemu canary: preserved again", "qemu canary: magic",
    "qemu canary: boot stamp (never reset)", "qemu canary: RAM pattern sha256",
    "qemu canary: counter went on from before the kexec",
    "qemu canary: counter rises after the kexec", "qemu canary: status",
    "qemu canary: magic before the kexec", "qemu canary: RAM pattern before the kexec",
    "qemu canary: counter rises before the kexec",
}  # fmt: skip


def api_daemon(state: Path, env: dict[str, str] | None = None) -> Daemon:
    daemon = start_daemon(state, api=True, env=env)
    deadline = time.monotonic() + 20
    while not (state / "run" / "api.sock").exists():
        assert time.monotonic() < deadline and daemon.alive(), daemon.log.read_text()
        time.sleep(0.05)
    return daemon


def ended(daemon: Daemon, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (record := ctl(daemon, "qualify", "show")[1])["outcome"] == "running":
        assert time.monotonic() < deadline and daemon.alive(), record
        time.sleep(0.2)
    return dict(record)


def vms(daemon: Daemon) -> list[str]:
    with Client(daemon.socket) as client:
        return [vm["id"] for vm in client.list()]


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="no QEMU on this host")
@pytest.mark.timeout(600)
def test_the_qemu_canary_crosses_each_kexec_of_the_chain_and_is_checked_after_each(
    tmp_path: Path, images: tuple[Path, Path]
) -> None:
    state = tmp_path / "luod"
    a, b = images
    daemon = api_daemon(state)
    code, started = ctl(
        daemon, "qualify", "start", "--chain", f"{a},{b},{a}", "--qemu-canary", *SMALL
    )
    assert code == 0, started
    assert started["request"]["qemu_canary"] is True
    kexeced(daemon)  # A → B: the canary froze with the update, luod ended its luod-qemu
    kexeced(start_daemon(state))  # B restores and checks it, then B → A
    last = api_daemon(state)
    try:
        record = ended(last)
        deadline = time.monotonic() + 30
        while vms(last):  # the end: QEMU quits, luod-qemu drops the canary VM
            assert time.monotonic() < deadline, vms(last)
            time.sleep(0.2)
    finally:
        last.stop()
    assert record["outcome"] == "passed", record
    vm = f"luodq-{record['id']}"
    for step in record["steps"]:
        checks = {c["name"]: c for c in step["checks"]}
        assert set(checks) >= QEMU_CHECKS, sorted(checks)
        assert all(c["result"] == "pass" for c in checks.values()), step
        assert checks[f"vm {vm}: reclaimed and done"]["result"] == "pass"
        stamp = checks["qemu canary: boot stamp (never reset)"]
        assert stamp["expected"] == stamp["actual"]
        went_on = checks["qemu canary: counter went on from before the kexec"]
        assert int(went_on["actual"]) >= int(went_on["expected"].removeprefix(">= "))
        assert step["timings"]["qemu_canary_seconds"] > 0
        assert step["timings"]["qemu_restore_seconds"] > 0
    first, second = record["steps"]
    sha = "qemu canary: RAM pattern sha256"
    assert {c["name"]: c for c in first["checks"]}[sha]["actual"] == {
        c["name"]: c for c in second["checks"]
    }[sha]["actual"]  # one boot of the guest across both kexecs: the same pattern


def fake_qemu(tmp_path: Path) -> dict[str, str]:
    """A PATH whose qemu-system-x86_64 fails at once, as a broken QEMU install would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    qemu = bin_dir / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\necho 'qemu: cannot start' >&2\nexit 1\n")
    qemu.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_a_canary_guest_that_cannot_start_fails_a_check_and_luod_goes_on(
    tmp_path: Path, images: tuple[Path, Path]
) -> None:
    a, b = images
    daemon = api_daemon(tmp_path / "luod", env=fake_qemu(tmp_path))
    try:
        code, started = ctl(
            daemon, "qualify", "start", "--chain", f"{a},{b}", "--qemu-canary", *SMALL
        )
        assert code == 0, started
        record = ended(daemon)
        assert daemon.alive()  # nothing kexeced, nothing crashed
        assert vms(daemon) == []  # the canary VM never stayed in luod
        code, again = ctl(daemon, "qualify", "start", "--chain", f"{a},{b}", *SMALL)
        assert code == 0, again  # the canaries of the failed one are gone: a new one starts
    finally:
        daemon.stop()
    assert record["outcome"] == "failed"
    [step] = record["steps"]
    [check] = step["checks"]
    assert check["name"] == "qemu canary: started and preserved" and check["result"] == "fail"
    assert "qemu-start-failed" in check["actual"], check
    assert "qemu canary: started and preserved" in record["reason"]


def test_a_host_without_qemu_is_refused_with_a_code_and_a_hint(
    tmp_path: Path, images: tuple[Path, Path]
) -> None:
    a, b = images
    daemon = api_daemon(tmp_path / "luod", env={"PATH": str(tmp_path / "empty")})
    try:
        code, problem = ctl(daemon, "qualify", "start", "--chain", f"{a},{b}", "--qemu-canary")
        assert daemon.alive()
    finally:
        daemon.stop()
    assert code == 1 and problem["code"] == "qemu-canary-unavailable", problem
    assert "qemu-system-x86_64" in problem["detail"] and "--qemu-canary" in problem["hint"]


def canary_processes(vm: str, state: Path) -> list[psutil.Process]:
    """luod-qemu processes of canary VM ``vm`` (its id is in their command lines) and the
    QEMU processes of luod's ``state`` (the canary's floppy is in theirs)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if (vm in cmdline and "luod.qemu" in cmdline) or (
            "qemu-system" in cmdline and str(state) in cmdline
        ):
            found.append(process)
    return found


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="no QEMU on this host")
@pytest.mark.timeout(600)
def test_a_luod_killed_during_a_qemu_qualification_leaves_no_canary_running(
    tmp_path: Path, images: tuple[Path, Path]
) -> None:
    """luod is killed while the canary guest runs (its update held in preparing): the restarted
    luod fails the qualification, and the canary's luod-qemu and QEMU, which outlive a luod as
    any VMM must, are stopped and its VM dropped, not left running for good; QEMU too, when
    its luod-qemu died of the killed luod's closed pipe before it handed QEMU over."""
    state = tmp_path / "luod"
    a, b = images
    daemon = api_daemon(state, env={holds.ENV: "preparing=120"})
    code, started = ctl(daemon, "qualify", "start", "--chain", f"{a},{b}", "--qemu-canary", *SMALL)
    assert code == 0, started
    vm = f"luodq-{started['id']}"
    deadline = time.monotonic() + 240
    while vm not in vms(daemon):  # registered: QEMU is starting, or about to
        assert time.monotonic() < deadline and daemon.alive(), daemon.log.read_text()[-2000:]
        time.sleep(0.01)
    daemon.process.kill()
    daemon.process.wait()
    (state / "run" / "api.sock").unlink()  # the killed luod's: wait for the new one's
    again = api_daemon(state)
    try:
        record = ended(again, timeout=30)
        deadline = time.monotonic() + 60
        while canary_processes(vm, state) or vm in vms(again):
            assert time.monotonic() < deadline, (canary_processes(vm, state), vms(again))
            time.sleep(0.2)
    finally:
        again.stop()
        for process in canary_processes(vm, state):
            process.kill()
    assert record["outcome"] == "failed" and "luod restarted" in record["reason"], record
