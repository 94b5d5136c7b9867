"""luod.net against real rtnetlink, each scenario in a network namespace of its own
(tests/integration/net_lab.py runs them all once, in one process, for these tests): recorded
devices deleted as a kexec deletes them, rebuilt, and recorded again; survivors left alone;
what cannot be rebuilt reported while the rest is."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from luod.core.nic import NetRecord, NicDecl
from luod.errors import LuodError
from luod.net.plumbing import Plumbing

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs root (for network namespaces) and /dev/net/tun",
)


@functools.cache
def lab_results() -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.net_lab"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
    return results


def lab(scenario: str) -> dict[str, Any]:
    return lab_results()[scenario]


def devices(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {device["name"]: device for device in report["devices"]}


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {name: device["status"] for name, device in devices(report).items()}


def nic(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in record["nics"] if item["name"] == name)


def test_two_taps_on_a_bridge_come_back_with_identical_attributes() -> None:
    seen = lab("round_trip")
    assert statuses(seen["report"]) == dict.fromkeys(("br-lab", "vm1-net0", "vm1-net1"), "rebuilt")
    assert seen["report"]["ready"] and seen["report"]["exact"]
    assert seen["again"] == seen["record"]
    assert NetRecord.from_dict(seen["again"]) == NetRecord.from_dict(seen["record"])


def test_the_record_holds_what_the_devices_were_made_with() -> None:
    record = lab("round_trip")["record"]
    net0, net1 = nic(record, "vm1-net0"), nic(record, "vm1-net1")
    assert (net0["kind"], net0["mac"], net0["mtu"], net0["txqlen"], net0["up"]) == (
        "tap",
        "52:54:00:00:01:00",
        9000,
        2000,
        True,
    )
    assert net0["tap"] == {"owner": 1000, "group": 1000, "pi": False, "vnet_hdr": True,
                           "multi_queue": True, "persist": True, "queues": 0}  # fmt: skip
    assert net1["tap"]["owner"] == 1001 and net1["tap"]["group"] is None
    assert not net1["tap"]["multi_queue"] and net1["mtu"] == 1500
    assert net0["master"] == net1["master"] == "br-lab"
    assert (net1["port"]["isolated"], net1["port"]["cost"], net1["port"]["learning"]) == (
        True,
        7,
        False,
    )
    assert not net0["port"]["isolated"]
    (bridge,) = record["bridges"]
    assert (bridge["name"], bridge["mac"], bridge["up"]) == ("br-lab", "52:54:00:00:00:01", True)
    settings = bridge["settings"]
    assert (settings["stp"], settings["forward_delay"], settings["priority"]) == (True, 400, 4096)


def test_vlans_on_the_bridge_ports_come_back() -> None:
    seen = lab("round_trip")
    if not seen["vlans"]:
        pytest.skip("this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)")
    record = seen["record"]
    assert record["bridges"][0]["settings"]["vlan_filtering"] is True
    assert nic(record, "vm1-net0")["vlans"] == [  # vid 1 stays, its PVID moved to 10
        {"vid": 1, "pvid": False, "untagged": True},
        {"vid": 10, "pvid": True, "untagged": True},
        {"vid": 20, "pvid": False, "untagged": False},
    ]
    assert nic(record, "vm1-net1")["vlans"] == [  # its default PVID 1 was removed
        {"vid": 30, "pvid": False, "untagged": False},
        {"vid": 31, "pvid": False, "untagged": True},
    ]
    assert nic(seen["again"], "vm1-net1")["vlans"] == nic(record, "vm1-net1")["vlans"]


def test_survivors_are_left_alone_and_their_differences_reported() -> None:
    seen = lab("partial")
    found = devices(seen["report"])
    assert statuses(seen["report"]) == {
        "br-lab": "differs",
        "vm1-net0": "differs",
        "vm1-net1": "rebuilt",
    }
    assert found["vm1-net0"]["differences"] == [{"field": "mtu", "recorded": 9000, "current": 1400}]
    assert found["vm1-net0"]["done"] == [] and found["br-lab"]["done"] == []
    assert {k: seen["after"][k] for k in seen["before"]} == seen["before"]  # same devices
    assert nic(seen["again"], "vm1-net0")["mtu"] == 1400  # not "repaired"
    assert seen["report"]["ready"] and not seen["report"]["exact"]


def test_a_restart_of_luod_without_kexec_touches_nothing() -> None:
    seen = lab("restart")
    assert statuses(seen["report"]) == dict.fromkeys(("br-lab", "vm1-net0", "vm1-net1"), "kept")
    assert all(device["done"] == [] for device in seen["report"]["devices"])
    assert seen["after"] == seen["before"]


def test_what_cannot_be_rebuilt_is_reported_and_the_rest_is_rebuilt() -> None:
    seen = lab("unrebuildable")
    report = seen["report"]
    found = devices(report)
    assert statuses(report) == {
        "veth-b": "unsupported",
        "tap-taken": "conflict",
        "tap-ok": "rebuilt",
        "tap-orphan": "partial",
        "tap-big": "partial",
    } | ({"mvtap0": "rebuilt"} if seen["macvtap"] else {})  # a kernel without CONFIG_MACVTAP
    assert "veth" in found["veth-b"]["reason"]
    assert found["tap-taken"]["reason"].startswith("exists as a veth, recorded as a tap")
    (error,) = found["tap-orphan"]["errors"]
    assert error.endswith("master br-other: bridge br-other does not exist (the rest was set)")
    vlans = {"vlans"} if seen["vlans"] else set()  # the port's default PVID is gone too
    assert {d["field"] for d in found["tap-orphan"]["differences"]} == {"master", "port"} | vlans
    (error,) = found["tap-big"]["errors"]
    assert "mtu 65535" in error and "EINVAL" in error
    assert found["tap-big"]["differences"] == [{"field": "mtu", "recorded": 65535, "current": 1500}]
    assert not report["ready"] and not report["exact"]


def test_preflight_names_the_vm_and_the_device_it_cannot_rebuild() -> None:
    seen = lab("preflight")
    warnings = seen["warnings"]
    codes = {(w["vm"], w["device"]): w["code"] for w in warnings}
    assert codes == {
        ("vm2", "veth-b"): "nic-unsupported",
        ("vm2", "mvtap0"): "nic-rename-risk" if seen["macvtap"] else "nic-absent",
        ("vm2", "tap-transient"): "nic-transient",
        ("vm2", "nope0"): "nic-absent",
        ("vm2", "tap-host"): "nic-bridge-unmanaged",
        ("vm2", "vm1-net0"): "nic-bridge-mismatch",
    }
    assert all(w["message"].startswith("VM vm2") and w["hint"] for w in warnings)


def test_an_asyncio_caller_uses_a_worker_thread_and_is_told_so_otherwise() -> None:
    def loopback() -> NetRecord:  # read-only: the host's own namespace is not changed
        with Plumbing() as net:
            return net.record([NicDecl("lo")])

    async def caller() -> NetRecord:
        with pytest.raises(LuodError) as info:
            loopback()
        assert "asyncio.to_thread" in info.value.hint
        return await asyncio.to_thread(loopback)

    (lo,) = asyncio.run(caller()).nics
    assert (lo.name, lo.kind, lo.mtu) == ("lo", "device", 65536)
