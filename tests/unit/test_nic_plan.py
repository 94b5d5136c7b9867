"""luod.core.nic_plan and nic_report: what luod does about each recorded device given what
exists now (pure: records in, plans and reports out), and the preflight warnings."""

from __future__ import annotations

import dataclasses

import pytest

from luod.core.nic import (
    BridgeRecord,
    BridgeSettings,
    MacvtapLink,
    NetRecord,
    NicDecl,
    NicRecord,
    PortSettings,
    TapFlags,
    Vlan,
)
from luod.core.nic_actions import (
    Configure,
    CreateBridge,
    CreateMacvtap,
    CreateTap,
    SetPort,
    SetVlans,
)
from luod.core.nic_plan import (
    Difference,
    Verdict,
    differences,
    fixups,
    plan,
    plan_nic,
    vlan_changes,
)
from luod.core.nic_report import RebuildReport, Status, rebuilt, untouched, warnings

FLAGS = TapFlags(owner=1000, group=1000, vnet_hdr=True, multi_queue=True)
TAP = NicRecord(
    "vm1-net0",
    "tap",
    "52:54:00:00:01:00",
    9000,
    True,
    tap=FLAGS,
    master="br0",
    port=PortSettings(isolated=True),
    vlans=(Vlan(10, pvid=True, untagged=True),),
)
BRIDGE = BridgeRecord("br0", "52:54:00:00:00:01", 9000, True, BridgeSettings(stp=True))
VETH = NicRecord("veth0", "veth", "52:54:00:00:03:00", 1500, True)
VF = NicRecord("enp1s0v3", "device", "52:54:00:00:04:00", 1500, True)


def test_a_missing_tap_is_created_then_configured_and_attached_in_one_request() -> None:
    (planned,) = plan(NetRecord((TAP,)), {})
    assert planned.verdict is Verdict.REBUILD
    assert planned.actions == (
        CreateTap("vm1-net0", "tap", FLAGS),
        Configure("vm1-net0", "52:54:00:00:01:00", 9000, 1000, "br0", up=True),
    )
    assert str(planned.actions[1]) == (
        "set vm1-net0 mac 52:54:00:00:01:00 mtu 9000 txqlen 1000 master br0 up"
    )


def test_a_tap_on_no_bridge_that_was_down_is_neither_attached_nor_brought_up() -> None:
    down = NicRecord("t0", "tun", None, 1500, False, tap=TapFlags(pi=True))
    actions = plan_nic(down, None).actions
    assert actions == (
        CreateTap("t0", "tun", TapFlags(pi=True)),
        Configure("t0", None, 1500, 1000, None, up=False),
    )


def test_fixups_put_back_port_settings_and_vlans_the_kernel_defaulted() -> None:
    joined = dataclasses.replace(TAP, port=PortSettings(), vlans=(Vlan(1, True, True),))
    assert fixups(TAP, joined) == [
        SetPort("vm1-net0", PortSettings(isolated=True)),
        SetVlans(
            "vm1-net0",
            add=(Vlan(10, pvid=True, untagged=True),),
            remove=(Vlan(1, True, True),),
        ),
    ]


def test_no_fixups_when_the_defaults_were_what_was_recorded() -> None:
    assert fixups(TAP, TAP) == []


def test_no_fixups_on_a_port_that_did_not_join_its_bridge() -> None:
    alone = dataclasses.replace(TAP, master=None, port=None, vlans=())
    assert fixups(TAP, alone) == []


def test_fixups_of_a_bridge_are_its_own_vlans() -> None:
    bridge = dataclasses.replace(BRIDGE, vlans=(Vlan(1, True, True), Vlan(100)))
    created = dataclasses.replace(BRIDGE, vlans=(Vlan(1, True, True),))
    assert fixups(bridge, created) == [SetVlans("br0", (Vlan(100),), (), own=True)]


def test_a_missing_macvtap_is_created_on_its_lower_device() -> None:
    link = MacvtapLink("eno1", "52:54:00:00:09:00", "bridge")
    macvtap = NicRecord("mvtap0", "macvtap", "52:54:00:00:02:00", 1500, True, macvtap=link)
    assert plan_nic(macvtap, None).actions[0] == CreateMacvtap("mvtap0", link)


def test_a_managed_bridge_is_planned_before_its_ports() -> None:
    plans = plan(NetRecord((TAP,), (BRIDGE,)), {})
    assert [p.name for p in plans] == ["br0", "vm1-net0"]
    assert plans[0].actions == (CreateBridge(BRIDGE), Configure("br0", mtu=9000, up=True))


def test_what_exists_and_matches_is_kept_without_actions() -> None:
    (planned,) = plan(NetRecord((TAP,)), {"vm1-net0": TAP})
    assert (planned.verdict, planned.actions, planned.differences) == (Verdict.KEEP, (), ())


def test_the_queues_a_vmm_had_attached_are_no_difference() -> None:
    attached = dataclasses.replace(TAP, tap=dataclasses.replace(FLAGS, queues=4))
    assert plan_nic(TAP, attached).verdict is Verdict.KEEP


def test_what_exists_but_differs_is_left_alone_with_every_difference() -> None:
    now = dataclasses.replace(
        TAP,
        mtu=1500,
        tap=dataclasses.replace(FLAGS, multi_queue=False),
        vlans=(Vlan(1, pvid=True, untagged=True),),
    )
    planned = plan_nic(TAP, now)
    assert planned.verdict is Verdict.DIFFERS and planned.actions == ()
    assert planned.differences == (
        Difference("mtu", 9000, 1500),
        Difference("tap.multi_queue", True, False),
        Difference(
            "vlans",
            [{"vid": 10, "pvid": True, "untagged": True}],
            [{"vid": 1, "pvid": True, "untagged": True}],
        ),
    )


def test_a_group_one_side_lacks_is_one_difference() -> None:
    now = dataclasses.replace(TAP, master=None, port=None, vlans=())
    fields = [d.field for d in differences(TAP, now)]
    assert fields == ["master", "port", "vlans"]


def test_a_name_taken_by_another_kind_is_a_conflict() -> None:
    taken = dataclasses.replace(VETH, name="vm1-net0")
    planned = plan_nic(TAP, taken)
    assert planned.verdict is Verdict.CONFLICT and planned.actions == ()
    assert planned.reason == "exists as a veth, recorded as a tap: left alone"
    assert plan(NetRecord(bridges=(BRIDGE,)), {"br0": taken})[0].verdict is Verdict.CONFLICT


@pytest.mark.parametrize(("record", "word"), [(VETH, "veth"), (VF, "SR-IOV VF")])
def test_a_missing_device_of_a_kind_luod_cannot_create_is_unsupported(
    record: NicRecord, word: str
) -> None:
    planned = plan_nic(record, None)
    assert planned.verdict is Verdict.UNSUPPORTED and planned.actions == ()
    assert word in planned.reason


def test_a_device_absent_at_record_time_is_planned_as_absent() -> None:
    (planned,) = plan(NetRecord(absent=("gone0",)), {})
    assert planned.verdict is Verdict.ABSENT and "missing when luod recorded" in planned.reason


@pytest.mark.parametrize(
    ("want", "have", "add", "remove"),
    [
        ((Vlan(10),), (), [Vlan(10)], []),
        ((Vlan(10),), (Vlan(1, True, True),), [Vlan(10)], [Vlan(1, True, True)]),
        ((Vlan(1),), (Vlan(1, True, True),), [Vlan(1)], []),  # same vid, new flags: no removal
        ((Vlan(5), Vlan(6)), (Vlan(5), Vlan(6)), [], []),
        ((), (Vlan(1, True, True),), [], [Vlan(1, True, True)]),
    ],
)
def test_vlan_changes_turn_a_port_into_exactly_the_recorded_vlans(
    want: tuple[Vlan, ...], have: tuple[Vlan, ...], add: list[Vlan], remove: list[Vlan]
) -> None:
    assert vlan_changes(want, have) == (add, remove)


def test_a_rebuilt_device_that_matches_is_rebuilt_and_one_that_does_not_is_partial() -> None:
    (planned,) = plan(NetRecord((TAP,)), {})
    done = [str(action) for action in planned.actions]
    assert rebuilt(planned, done, [], TAP, TAP, 0.002).status is Status.REBUILT
    detached = dataclasses.replace(TAP, master=None, port=None, vlans=())
    error = ["attach vm1-net0 to bridge br0: bridge br0 does not exist"]
    partial = rebuilt(planned, done[:2], error, detached, TAP, 0.002)
    assert partial.status is Status.PARTIAL and partial.errors == tuple(error)
    assert [d.field for d in partial.differences] == ["master", "port", "vlans"]
    failed = rebuilt(
        planned, [], ["create tap vm1-net0 (...): Operation not permitted"], None, TAP, 0
    )
    assert failed.status is Status.FAILED and "Operation not permitted" in failed.reason


def test_the_report_says_ready_when_every_nic_exists_and_exact_when_nothing_differs() -> None:
    bridge, nic = plan(NetRecord((TAP, VETH), (BRIDGE,)), {"br0": BRIDGE, "veth0": VETH})[:2]
    kept_bridge = untouched(bridge)
    made = rebuilt(nic, ["create ..."], [], TAP, TAP, 0.001)
    assert RebuildReport((kept_bridge, made), 0.01).exact
    differs = untouched(plan_nic(TAP, dataclasses.replace(TAP, mtu=1500)))
    report = RebuildReport((kept_bridge, differs), 0.01)
    assert report.ready and not report.exact
    assert report.problems == [
        "nic vm1-net0: differs (exists but differs from the record: left alone)"
    ]
    missing = untouched(plan_nic(VETH, None))
    assert not RebuildReport((made, missing), 0.01).ready
    assert RebuildReport((made, missing), 0.01).to_dict()["devices"][1]["status"] == "unsupported"


def test_warnings_name_the_vm_and_the_device() -> None:
    transient = dataclasses.replace(TAP, tap=dataclasses.replace(FLAGS, persist=False))
    macvtap = NicRecord(
        "mvtap0", "macvtap", "52:54:00:00:02:00", 1500, True, macvtap=MacvtapLink("eth0")
    )
    record = NetRecord((transient, VF, macvtap), absent=("gone0",))
    decls = [NicDecl("vm1-net0", "br9"), NicDecl("enp1s0v3"), NicDecl("mvtap0")]
    found = warnings("vm1", decls, record, managed={"br9"})
    assert [(w.vm, w.device, w.code) for w in found] == [
        ("vm1", "gone0", "nic-absent"),
        ("vm1", "vm1-net0", "nic-transient"),
        ("vm1", "vm1-net0", "nic-bridge-mismatch"),
        ("vm1", "vm1-net0", "nic-bridge-unmanaged"),
        ("vm1", "enp1s0v3", "nic-unsupported"),
        ("vm1", "mvtap0", "nic-rename-risk"),
    ]
    assert all(w.message.startswith("VM vm1") and w.hint for w in found)
    assert "SR-IOV" in found[4].message


def test_a_tap_on_a_managed_bridge_as_declared_gets_no_warning() -> None:
    assert warnings("vm1", [NicDecl("vm1-net0", "br0")], NetRecord((TAP,)), {"br0"}) == []
