"""luod.core.nic: NIC declarations and records, their JSON round trip, and the clear errors that
bad input gets (a record crosses the kexec in the manifest, a declaration comes from a VMM)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from luod.errors import LuodError

TAP = NicRecord(
    "vm1-net0",
    "tap",
    "52:54:00:00:01:00",
    9000,
    True,
    2000,
    tap=TapFlags(owner=1000, group=1000, vnet_hdr=True, multi_queue=True, queues=4),
    master="br0",
    port=PortSettings(cost=7, isolated=True),
    vlans=(Vlan(20), Vlan(10, pvid=True, untagged=True)),
)
MACVTAP = NicRecord(
    "mvtap0", "macvtap", "52:54:00:00:02:00", 1500, True, 500, macvtap=MacvtapLink("eno1", None)
)
BRIDGE = BridgeRecord(
    "br0", "52:54:00:00:00:01", 1500, True, BridgeSettings(stp=True, vlan_filtering=True)
)
RECORD = NetRecord((TAP, MACVTAP), (BRIDGE,), ("gone0",))


def roundtrip(record: NetRecord) -> NetRecord:
    return NetRecord.from_dict(json.loads(json.dumps(record.to_dict())))


def errors_of(data: Any) -> LuodError:
    with pytest.raises(LuodError) as info:
        NetRecord.from_dict(data)
    return info.value


def test_a_record_survives_json() -> None:
    assert roundtrip(RECORD) == RECORD
    assert RECORD.to_dict()["version"] == 1


def test_vlans_are_kept_sorted_and_macs_lower_case() -> None:
    record = NicRecord("t0", "tap", "52:54:00:AB:CD:EF", 1500, True, tap=TapFlags(),
                       master="br0", vlans=(Vlan(30), Vlan(4)))  # fmt: skip
    assert record.mac == "52:54:00:ab:cd:ef"
    assert [vlan.vid for vlan in record.vlans] == [4, 30]


def test_a_declaration_survives_json_and_refuses_bad_names() -> None:
    decl = NicDecl("tap0", "br0")
    assert NicDecl.from_dict(decl.to_dict()) == decl
    assert NicDecl.from_dict({"name": "tap0"}) == NicDecl("tap0")
    with pytest.raises(LuodError) as info:
        NicDecl.from_dict({"name": "tap0", "bridge": "a-bridge-name-too-long"}, "nics[0]")
    assert info.value.code == "bad-nic-name"
    assert "nics[0].bridge" in info.value.message and "15 bytes" in info.value.hint


@pytest.mark.parametrize(
    "name", ["", "x" * 16, "é" * 8, "tap/0", "tap:0", "tap 0", ".", "..", "tap%d", 7, None]
)
def test_invalid_interface_names_are_refused(name: object) -> None:
    with pytest.raises(LuodError) as info:
        NicDecl.from_dict({"name": name})
    assert info.value.code == "bad-nic-name"
    assert info.value.hint


def test_a_fifteen_byte_name_is_the_longest() -> None:
    assert NicDecl("x" * 15).name == "x" * 15


@pytest.mark.parametrize(
    ("path", "value", "code", "where"),
    [
        (("nics", 0, "mac"), "01:00:5e:00:00:01", "bad-nic-mac", "net.nics[0].mac"),
        (("nics", 0, "mac"), "52:54:00:00:01", "bad-nic-mac", "net.nics[0].mac"),
        (("nics", 0, "mac"), "00:00:00:00:00:00", "bad-nic-mac", "net.nics[0].mac"),
        (("nics", 0, "mtu"), -1, "bad-nic-record", "net.nics[0].mtu"),
        (("nics", 0, "mtu"), 2**32, "bad-nic-record", "net.nics[0].mtu"),
        (("nics", 0, "mtu"), "1500", "bad-nic-record", "net.nics[0].mtu"),
        (("nics", 0, "up"), 1, "bad-nic-record", "net.nics[0].up"),
        (("nics", 0, "tap", "owner"), -1, "bad-nic-record", "net.nics[0].tap.owner"),
        (("nics", 0, "tap", "queues"), 257, "bad-nic-record", "net.nics[0].tap.queues"),
        (("nics", 0, "vlans", 0, "vid"), 4095, "bad-nic-record", "net.nics[0].vlans[0].vid"),
        (("nics", 0, "port", "priority"), 64, "bad-nic-record", "net.nics[0].port.priority"),
        (("nics", 1, "macvtap", "mode"), "loud", "bad-nic-record", "net.nics[1].macvtap.mode"),
        (("nics", 0, "master"), "b" * 16, "bad-nic-name", "net.nics[0].master"),
        (("bridges", 0, "settings", "priority"), 65536, "bad-nic-record", "settings.priority"),
        (("absent", 0), "no/slash", "bad-nic-name", "net.absent[0]"),
        (("nics",), {"not": "a list"}, "bad-nic-record", "net.nics"),
    ],
)
def test_a_bad_field_is_named_with_its_path(
    path: tuple[Any, ...], value: object, code: str, where: str
) -> None:
    data = RECORD.to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    error = errors_of(data)
    assert error.code == code
    assert where in error.message


def test_missing_and_unknown_fields_are_refused() -> None:
    data = RECORD.to_dict()
    del data["nics"][0]["mtu"]
    assert "net.nics[0].mtu: missing" in errors_of(data).message
    data = RECORD.to_dict()
    data["nics"][0]["tap"]["colour"] = "blue"
    error = errors_of(data)
    assert "unknown field(s) 'colour'" in error.message and "newer" in error.hint


def test_a_newer_record_format_is_refused_with_a_hint() -> None:
    data = RECORD.to_dict() | {"version": 2}
    error = errors_of(data)
    assert error.code == "bad-nic-record" and "this luod reads <= 1" in error.message
    assert "newer luod" in error.hint


def test_a_record_that_is_not_an_object_is_refused() -> None:
    assert "expected an object" in errors_of([1, 2]).message


@pytest.mark.parametrize(
    ("vlans", "text"),
    [
        ([{"vid": 10, "pvid": True, "untagged": True}] * 2, "once"),
        (
            [
                {"vid": 10, "pvid": True, "untagged": False},
                {"vid": 11, "pvid": True, "untagged": False},
            ],
            "more than one PVID",
        ),
    ],
)
def test_vlans_of_a_port_are_consistent(vlans: list[dict[str, Any]], text: str) -> None:
    data = RECORD.to_dict()
    data["nics"][0]["vlans"] = vlans
    error = errors_of(data)
    assert error.code == "bad-nic-vlan" and text in error.message


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"tap": None}, "tap flags go with kind tap or tun only"),
        ({"kind": "veth"}, "tap flags go with kind tap or tun only"),
        ({"master": None}, "need a master"),
    ],
)
def test_inconsistent_records_are_refused(change: dict[str, Any], text: str) -> None:
    data = RECORD.to_dict()
    data["nics"][0].update(change)
    assert text in errors_of(data).message


def test_a_device_recorded_twice_is_refused() -> None:
    data = RECORD.to_dict()
    data["absent"] = ["vm1-net0"]
    assert "vm1-net0 recorded twice" in errors_of(data).message


def test_the_input_is_not_modified() -> None:
    data = RECORD.to_dict()
    kept = copy.deepcopy(data)
    NetRecord.from_dict(data)
    assert data == kept


names = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/:%"),
    min_size=1,
    max_size=15,
).filter(lambda name: name not in (".", ".."))
macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda octets: ":".join(f"{b:02x}" for b in [octets[0] & 0xFE | 0x02, *octets[1:]])
)


@given(
    name=names,
    mac=macs,
    mtu=st.integers(68, 65536),
    vids=st.sets(st.integers(1, 4094), max_size=8),
    owner=st.none() | st.integers(0, 2**32 - 2),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_any_valid_tap_record_survives_json(
    name: str,
    mac: str,
    mtu: int,
    vids: set[int],
    owner: int | None,
    flags: tuple[bool, bool, bool],
) -> None:
    pi, vnet_hdr, multi_queue = flags
    tap = TapFlags(owner=owner, pi=pi, vnet_hdr=vnet_hdr, multi_queue=multi_queue)
    vlans = tuple(Vlan(vid, pvid=i == 0) for i, vid in enumerate(sorted(vids)))
    record = NetRecord(
        (NicRecord(name, "tap", mac, mtu, True, tap=tap, master="br0", vlans=vlans),)
    )
    assert roundtrip(record) == record
