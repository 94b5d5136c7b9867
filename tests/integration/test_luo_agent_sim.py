"""Both dialects on one socket of ``luod --simulate``, across its simulated kexec: a luod-dialect
VMM (luod-demo-vmm, through the client library) and a luo-agent client speaking raw JSON lines
(the framing of tests/vm/luo_agent_client.py; its preserve ioctls need the real kernel, which
tests/vm/test_luo_agent.py covers). The luo-agent client's one READY lets the update reach the
kexec well within a 1.5 s freezing deadline; after the restart its CLAIM ends the VM."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from luod.errors import LuodError
from luod.kernel import memfd
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.integration.conftest import start_daemon
from tests.integration.test_update_sim import demo, wait_line
from tests.vm.luo_agent_client import Luod as RawClient


def test_a_luo_agent_client_and_a_luod_client_share_an_update(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    daemon = start_daemon(tmp_path / "luod")
    record = tmp_path / "vm-a.json"
    vmm = demo(daemon, "run", "--id", "vm-a", "--ram", "ram0=1M", "--record", str(record))
    wait_line(vmm, "handed-over")
    agent = RawClient(str(daemon.socket))
    agent.send({"cmd": "SUBSCRIBE", "id": "agent"})
    assert (agent.next_message(timeout=10) or {}).get("ok") is True
    with Client(daemon.socket) as operator:
        checks = operator.update(image, dry_run=True)["checks"]
        assert [c["status"] for c in checks if c["id"] == "pause"] == ["warn"]
        operator.update(image, deadlines={"freezing": 1.5})
        while (message := agent.next_message(timeout=10)) is not None:
            if message.get("event") == "START_PRESERVATION":
                break
        assert message is not None, "no START_PRESERVATION"
        os.close(agent.take_fd())  # the simulator's session fd: nothing to preserve into here
        agent.send({"cmd": "READY"})
        assert daemon.process.wait(timeout=20) == 0, daemon.log.read_text()  # the kexec
    seen = []
    with contextlib.suppress(SystemExit):  # until luod's end closes the connection
        while (message := agent.next_message(timeout=5)) is not None:
            seen.append(message)
    assert [m for m in seen if "event" in m] == []  # no FREEZE, no RESUME
    vmm.kill()
    vmm.wait()

    restarted = start_daemon(tmp_path / "luod")
    try:
        agent = RawClient(str(restarted.socket))
        agent.send({"cmd": "CLAIM", "id": "agent"})
        assert (agent.next_message(timeout=10) or {}).get("ok") is True
        os.close(agent.take_fd())
        reclaim = [sys.executable, "-m", "luod.demo.vmm", "reclaim", "--id", "vm-a"]
        reclaim += ["--socket", str(restarted.socket), "--record", str(record)]
        done = subprocess.run(reclaim, capture_output=True, text=True, timeout=60, check=False)
        assert '"verified"' in done.stdout, done.stdout + done.stderr
        with Client(restarted.socket) as client:
            vms = client.list()
            final = client.history()[-1]
    finally:
        restarted.stop()
    assert vms == []  # the agent's CLAIM ended its VM, vm-a's DONE its own
    assert final["outcome"] == "completed", final["reason"]
    assert (
        "freeze_trusted" in final["vms"]["agent"] and "freeze_trusted" not in final["vms"]["vm-a"]
    )


def test_luod_refuses_an_update_while_a_handover_vmm_that_cannot_pause_is_connected(
    tmp_path: Path,
) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    daemon = start_daemon(tmp_path / "luod")
    try:
        with Client(daemon.socket, capabilities=None) as raw, memfd.create("ram0", 4096) as ram:
            raw.register("raw")  # luod's verbs without HELLO: never sent FREEZE
            raw.preserve("raw", {"ram0": ram})
            with Client(daemon.socket) as operator, pytest.raises(LuodError) as refused:
                operator.update(image)
            assert refused.value.code == "preflight-failed" and "pause" in refused.value.message
            assert "raw (its VMM is connected but did not ask for FREEZE" in refused.value.hint
        with Client(daemon.socket) as operator:  # that VMM is gone: nothing runs VM raw now
            checks = operator.update(image, dry_run=True)["checks"]
            assert [c["status"] for c in checks if c["id"] == "pause"] == ["pass"]
    finally:
        daemon.stop()
