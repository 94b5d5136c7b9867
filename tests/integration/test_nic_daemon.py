"""luod's NIC wiring end to end (issue 15): VMMs declare their taps, luod records them at
prepare, and after the (simulated) kexec rebuilds them before RECLAIM answers, tells the VMM in
RECLAIM's reply, names what it could not rebuild (RECLAIM, luoctl vm) without holding memory
back; a luod restart without a kexec touches nothing. Each scenario runs once, in a network
namespace of its own (tests/integration/nic_daemon_lab.py)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs root (for network namespaces) and /dev/net/tun",
)


@functools.cache
def lab(scenario: str) -> dict[str, Any]:
    state = tempfile.mkdtemp(prefix=f"luod-nic-{scenario}-")
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.nic_daemon_lab", state, scenario],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def devices(nics: dict[str, Any]) -> dict[str, str]:
    return {device["name"]: device["status"] for device in nics["devices"]}


def test_vmms_declare_their_nics_at_register() -> None:
    listed = lab("kexec")["listed"]
    assert listed["vm1"] == [
        {"name": "vm1-net0", "bridge": "br-lab"},
        {"name": "vm1-net1", "bridge": "br-lab"},
    ]
    assert listed["vm2"] == [{"name": "vm2-veth0", "bridge": None}] and listed["vm3"] == []


def test_taps_and_their_bridge_come_back_exactly_before_reclaim() -> None:
    seen = lab("kexec")
    assert seen["stopped"] == 0
    vm1 = seen["reclaimed"]["vm1"]
    assert vm1["event"] == "verified"
    assert vm1["nics"]["ready"] and vm1["nics"]["exact"] and vm1["nics"]["problems"] == []
    assert devices(vm1["nics"]) == dict.fromkeys(("br-lab", "vm1-net0", "vm1-net1"), "rebuilt")
    assert seen["after"] == seen["before"]  # kind, MAC, MTU, queues, owner, bridge, port...
    net0 = next(nic for nic in seen["after"]["nics"] if nic["name"] == "vm1-net0")
    assert net0["tap"]["multi_queue"] and net0["tap"]["vnet_hdr"] and net0["tap"]["owner"] == 1000


def test_a_vm_without_nics_gets_no_nics_field() -> None:
    vm3 = lab("kexec")["reclaimed"]["vm3"]
    assert vm3["event"] == "verified" and vm3["nics"] is None


def test_a_nic_that_cannot_be_rebuilt_is_named_and_memory_still_comes_back() -> None:
    seen = lab("kexec")
    vm2 = seen["reclaimed"]["vm2"]
    assert vm2["files"] == ["ram0"]
    assert not vm2["nics"]["ready"] and devices(vm2["nics"]) == {"vm2-veth0": "unsupported"}
    assert any("vm2-veth0" in problem for problem in vm2["nics"]["problems"])
    shown = seen["luoctl"]
    assert "nics      vm2-veth0" in shown and "network   NOT READY" in shown, shown
    assert "problem nic vm2-veth0: unsupported" in shown


def test_the_preflight_warns_naming_the_vm_and_the_device() -> None:
    checks = [c for c in lab("kexec")["checks"] if c["id"] == "nics"]
    assert [c["status"] for c in checks] == ["warn"]
    assert "VM vm2" in checks[0]["message"] and "vm2-veth0" in checks[0]["message"]
    assert checks[0]["hint"]


def test_the_rebuild_is_a_part_of_each_vms_blackout() -> None:
    history = lab("kexec")["history"]
    assert history["outcome"] == "completed"
    vm1 = history["vms"]["vm1"]
    assert vm1["freeze_ack"]["realtime"] < vm1["nics_rebuilt"]["realtime"]
    assert vm1["nics_rebuilt"]["realtime"] <= vm1["reclaimed"]["realtime"]
    assert "nics_rebuilt" not in history["vms"]["vm3"]


def test_taps_that_survive_a_luod_restart_are_not_touched() -> None:
    seen = lab("restart")
    assert seen["after"] == seen["before"] and seen["mtu"] == [9000, 9000]
    (vm1,) = seen["listed"]  # "lost": the simulated kernel does not outlive its luod
    assert [nic["name"] for nic in vm1["nics"]] == ["vm1-net0", "vm1-net1"]
    assert "nics-rebuilt" not in seen["log"] and "nics-recorded" not in seen["log"]
