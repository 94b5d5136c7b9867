"""A full update under ``luod --simulate``: its kexec ends the daemon; starting it again on the
same state directory continues with the reclaim (issue 4.7). Handover VMMs only: a delegated
VMM preserves with its own ioctls, which only a real kernel can serve."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from luod.errors import LuodError
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.integration.conftest import Daemon, start_daemon

VMS = ("vm-a", "vm-b", "vm-c")


def demo(daemon: Daemon, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "luod.demo.vmm", *args, "--socket", str(daemon.socket)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_line(process: subprocess.Popen[bytes], word: str) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if word.encode() in line:
            return
    raise AssertionError(f"demo VMM ended before {word!r}")


def stalling_vmm(daemon: Daemon, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A VMM that handed its RAM over and will never answer FREEZE."""
    vmm = demo(
        daemon,
        "run",
        "--id",
        "stall",
        "--on-freeze",
        "ignore",
        "--record",
        str(tmp_path / "stall.json"),
    )
    wait_line(vmm, "handed-over")
    return vmm


def test_update_kexec_restart_reclaim(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    daemon = start_daemon(tmp_path / "luod")
    vmms = []
    for vm in VMS:
        record = tmp_path / f"{vm}.json"
        vmms.append(demo(daemon, "run", "--id", vm, "--ram", "ram0=8M", "--record", str(record)))
    for process in vmms:
        wait_line(process, "handed-over")
    time.sleep(0.2)  # the guests write
    with Client(daemon.socket) as client, contextlib.suppress(LuodError, ConnectionError):
        client.update(image, wait=True, deadlines={"freezing": 10})
    assert daemon.process.wait(timeout=20) == 0, daemon.log.read_text()
    for process in vmms:
        process.kill()
        process.wait()
    restarted = start_daemon(tmp_path / "luod")
    try:
        for vm in VMS:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "luod.demo.vmm",
                    "reclaim",
                    "--id",
                    vm,
                    "--socket",
                    str(restarted.socket),
                    "--record",
                    str(tmp_path / f"{vm}.json"),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert json.loads(done.stdout.splitlines()[-1])["event"] == "verified", done.stdout
        with Client(restarted.socket) as client:
            history = client.history()
    finally:
        restarted.stop()
    assert history[-1]["outcome"] == "completed"
    assert all(seconds and seconds > 0 for seconds in history[-1]["blackout"].values())
    # a simulated kexec never took the host's link down: no uplink figure, rather than a fake
    assert "uplink_up" not in history[-1]["events"]


def test_aborts_resume_every_vmm_and_a_retry_works(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    daemon = start_daemon(tmp_path / "luod")
    good = demo(daemon, "run", "--id", "good", "--record", str(tmp_path / "good.json"))
    wait_line(good, "handed-over")
    try:
        with Client(daemon.socket) as client:
            for behaviour, expected in (("ignore", "deadline"), ("refuse", "refuses")):
                bad = demo(
                    daemon,
                    "run",
                    "--id",
                    f"bad-{behaviour}",
                    "--on-freeze",
                    behaviour,
                    "--record",
                    str(tmp_path / f"{behaviour}.json"),
                )
                wait_line(bad, "handed-over")
                reply = client.update(image, wait=True, deadlines={"freezing": 1.5})
                assert reply["update"]["outcome"] == "aborted"
                assert expected in reply["update"]["reason"]
                wait_line(good, "resumed")
                bad.terminate()
                bad.wait()
            states = {vm["id"]: vm["state"] for vm in client.list()}
            assert set(states.values()) == {"preserved"} and len(states) == 3
            reply = client.update(image, wait=True, dry_run=True)
            assert {c["status"] for c in reply["checks"]} <= {"pass", "warn"}
    finally:
        good.kill()
        good.wait()
        daemon.stop()


def test_sigterm_while_freezing_is_deferred_until_the_update_leaves(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    daemon = start_daemon(tmp_path / "luod")
    stalling = stalling_vmm(daemon, tmp_path)
    try:
        with Client(daemon.socket) as operator:
            operator.watch()
            operator.update(image, deadlines={"freezing": 60})
            while (event := operator.wait_event("PHASE", timeout=10)) is not None:
                if event.data["to"] == "freezing":
                    break
            daemon.process.terminate()
            time.sleep(0.5)
            assert daemon.alive(), "luod stopped in the middle of a freeze"
            assert "signal-deferred" in daemon.log.read_text()
            operator.abort("operator changed their mind")
        assert daemon.process.wait(timeout=10) == 0  # the deferred stop, once aborted
    finally:
        stalling.kill()
        stalling.wait()
        daemon.stop()


def test_the_configured_freezing_deadline_applies(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    conf = tmp_path / "luod.toml"
    conf.write_text("[deadlines]\nfreezing = 1.0\n")
    daemon = start_daemon(tmp_path / "luod", "--config", str(conf))
    stalling = stalling_vmm(daemon, tmp_path)
    try:
        with Client(daemon.socket) as operator:
            started = time.monotonic()
            reply = operator.update(image, wait=True)  # no deadline in the request
            assert reply["update"]["outcome"] == "aborted"
            assert time.monotonic() - started < 8
    finally:
        stalling.kill()
        stalling.wait()
        daemon.stop()
