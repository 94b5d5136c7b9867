"""kill -9 of a simulated luod in the middle of a freeze. The simulated kernel lives in luod's
process, so the restart is a cold boot: the update's record ends ``failed`` in the history, the
VMs are reported ``lost`` (never dropped silently), and the demo VMM, paused for FREEZE,
reconnects by itself. (The same-boot restart, where nothing is lost and the VMMs get RESUME, is
tests/unit/test_restart_mid_update.py and, on the real kernel, tests/vm/test_chaos.py.)"""

from __future__ import annotations

import signal
from pathlib import Path

from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.integration.conftest import start_daemon
from tests.integration.test_update_sim import demo, stalling_vmm, wait_line


def test_kill_9_while_freezing_on_the_simulator_is_a_cold_boot(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    daemon = start_daemon(tmp_path / "luod")
    paused = demo(daemon, "run", "--id", "vm1", "--record", str(tmp_path / "vm1.json"))
    stalling = stalling_vmm(daemon, tmp_path)
    try:
        wait_line(paused, "handed-over")
        with Client(daemon.socket) as operator:
            operator.update(image, deadlines={"freezing": 60})
        wait_line(paused, "frozen")
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(timeout=10)
        wait_line(paused, "luod-gone")
        restarted = start_daemon(tmp_path / "luod")
        try:
            wait_line(paused, "reconnected")
            with Client(restarted.socket) as operator:
                [record] = operator.history()
                states = {vm["id"]: vm["state"] for vm in operator.list()}
        finally:
            restarted.stop()
    finally:
        for vmm in (paused, stalling):
            vmm.kill()
            vmm.wait()
    assert record["outcome"] == "failed"
    assert record["reason"].startswith("the machine booted without the live update")
    assert states == {"vm1": "lost", "stall": "lost"}
