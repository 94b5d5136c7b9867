"""Read network devices over rtnetlink (pyroute2) into luod.core.nic records.

One RTM_GETLINK per device (by name), plus one AF_BRIDGE dump for the VLANs of bridge ports
(the kernel answers that one only as a dump), made once per Reader and only for a bridge that
has VLANs at all (a kernel without CONFIG_BRIDGE_VLAN_FILTERING has none: no dump).
Attributes read: IFLA_INFO_KIND; for tun/tap the IFLA_TUN_* attributes (kernel >= 4.15: owner,
group, type, pi, vnet_hdr, persist, multi_queue, num_queues); for macvtap its IFLA_LINK and
mode, and the lower device's IFLA_PERM_ADDRESS; the master and, for a bridge port, its
IFLA_BRPORT_* settings; for a bridge its IFLA_BR_* settings.
"""

from __future__ import annotations

import errno
from typing import Any, Final

from luod.core.nic import (
    HARDWARE,
    BridgeRecord,
    BridgeSettings,
    MacvtapLink,
    NicRecord,
    PortSettings,
    TapFlags,
    Vlan,
)
from luod.core.nic_fields import check_mac
from luod.errors import LuodError

IFF_UP: Final = 0x1
BRIDGE_VLAN_INFO_PVID: Final = 0x2
BRIDGE_VLAN_INFO_UNTAGGED: Final = 0x4
TUN_TYPES: Final = {1: "tun", 2: "tap"}
PORT_ATTRS: Final = {
    "cost": "IFLA_BRPORT_COST",
    "priority": "IFLA_BRPORT_PRIORITY",
    "learning": "IFLA_BRPORT_LEARNING",
    "unicast_flood": "IFLA_BRPORT_UNICAST_FLOOD",
    "mcast_flood": "IFLA_BRPORT_MCAST_FLOOD",
    "bcast_flood": "IFLA_BRPORT_BCAST_FLOOD",
    "hairpin": "IFLA_BRPORT_MODE",
    "isolated": "IFLA_BRPORT_ISOLATED",
    "guard": "IFLA_BRPORT_GUARD",
    "root_block": "IFLA_BRPORT_PROTECT",
}
BRIDGE_ATTRS: Final = {
    "stp": "IFLA_BR_STP_STATE",
    "vlan_filtering": "IFLA_BR_VLAN_FILTERING",
    "default_pvid": "IFLA_BR_VLAN_DEFAULT_PVID",  # absent without CONFIG_BRIDGE_VLAN_FILTERING
    "forward_delay": "IFLA_BR_FORWARD_DELAY",
    "hello_time": "IFLA_BR_HELLO_TIME",
    "max_age": "IFLA_BR_MAX_AGE",
    "ageing_time": "IFLA_BR_AGEING_TIME",
    "priority": "IFLA_BR_PRIORITY",
}

Device = NicRecord | BridgeRecord


class Reader:
    """Reads devices through one IPRoute; bridge VLANs are dumped at most once per Reader."""

    def __init__(self, ipr: Any) -> None:
        self.ipr = ipr
        self._vlans: dict[int, tuple[Vlan, ...]] | None = None
        self._names: dict[int, str] = {}  # every device met, by index and by name
        self._indexes: dict[str, int] = {}
        self._vlan_capable: dict[int, bool] = {}  # bridge index -> it has VLAN entries

    def link(self, name: str | None = None, index: int | None = None) -> Any | None:
        """The RTM_NEWLINK message of a device, or None if there is none."""
        from pyroute2.netlink.exceptions import NetlinkError

        query = {"ifname": name} if name is not None else {"index": index}
        try:
            msg = self.ipr.link("get", **query)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise
        self._remember(msg)
        return msg

    def _remember(self, msg: Any) -> None:
        index, name = msg["index"], msg.get_attr("IFLA_IFNAME")
        self._names[index], self._indexes[name] = name, index
        info = msg.get_attr("IFLA_LINKINFO")
        if info is not None and info.get_attr("IFLA_INFO_KIND") == "bridge":
            data = info.get_attr("IFLA_INFO_DATA")
            # a kernel without CONFIG_BRIDGE_VLAN_FILTERING has no VLANs, and no default PVID
            self._vlan_capable[index] = data.get_attr("IFLA_BR_VLAN_DEFAULT_PVID") is not None

    def index(self, name: str) -> int | None:
        """The index of a device by name (remembered, or one request); None if none."""
        if name not in self._indexes:
            msg = self.link(name)
            if msg is None:
                return None
        return self._indexes[name]

    def device(self, name: str) -> Device | None:
        msg = self.link(name)
        return None if msg is None else self.parse(msg)

    def parse(self, msg: Any) -> Device:
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        if kind == "bridge":
            return self._bridge(msg, data)
        master = self._master(msg, info)
        tap = _tap(data) if kind == "tun" else None
        return NicRecord(
            name=msg.get_attr("IFLA_IFNAME"),
            kind=_kind(kind, data),
            mac=_mac(msg.get_attr("IFLA_ADDRESS")),
            mtu=msg.get_attr("IFLA_MTU"),
            up=bool(msg["flags"] & IFF_UP),
            txqlen=msg.get_attr("IFLA_TXQLEN") or 0,
            tap=tap,
            macvtap=self._macvtap(msg, data) if kind == "macvtap" else None,
            master=master,
            port=_port(info.get_attr("IFLA_INFO_SLAVE_DATA")) if master else None,
            vlans=self._port_vlans(msg) if master else (),
        )

    def name(self, index: int) -> str:
        if index in self._names:
            return self._names[index]
        msg = self.link(index=index)
        if msg is None:
            raise LuodError("net-changed", f"device {index} vanished while luod read it", "retry")
        return str(msg.get_attr("IFLA_IFNAME"))

    def _port_vlans(self, msg: Any) -> tuple[Vlan, ...]:
        master = msg.get_attr("IFLA_MASTER")
        if master not in self._vlan_capable:
            self.link(index=master)
        return self.vlans(msg["index"]) if self._vlan_capable.get(master) else ()

    def vlans(self, index: int) -> tuple[Vlan, ...]:
        """The VLANs of a port or bridge: one AF_BRIDGE dump per Reader (forget_vlans: again)."""
        if self._vlans is None:
            self._vlans = {msg["index"]: _vlan_list(msg) for msg in self.ipr.get_vlans()}
        return self._vlans.get(index, ())

    def forget_vlans(self) -> None:
        self._vlans = None

    def _master(self, msg: Any, info: Any) -> str | None:
        index = msg.get_attr("IFLA_MASTER")
        if not index or info is None or info.get_attr("IFLA_INFO_SLAVE_KIND") != "bridge":
            return None  # luod rebuilds bridge ports only (an OVS port is OVS's to restore)
        return self.name(index)

    def _macvtap(self, msg: Any, data: Any) -> MacvtapLink:
        lower = self.link(index=msg.get_attr("IFLA_LINK"))
        if lower is None:
            raise LuodError("net-changed", "a macvtap's lower device vanished", "retry")
        mode = data.get_attr("IFLA_MACVTAP_MODE") if data is not None else None
        return MacvtapLink(
            lower.get_attr("IFLA_IFNAME"),
            _mac(lower.get_attr("IFLA_PERM_ADDRESS")),
            str(mode or "vepa"),
        )

    def _bridge(self, msg: Any, data: Any) -> BridgeRecord:
        values = {key: data.get_attr(attr) for key, attr in BRIDGE_ATTRS.items()}
        if values["default_pvid"] is None:  # a kernel without VLAN filtering: its default
            values["default_pvid"] = 1
        values["stp"] = bool(values["stp"])  # kernel (1) or user-space (2) STP: on
        values["vlan_filtering"] = bool(values["vlan_filtering"])
        return BridgeRecord(
            name=msg.get_attr("IFLA_IFNAME"),
            mac=_mac(msg.get_attr("IFLA_ADDRESS")),
            mtu=msg.get_attr("IFLA_MTU"),
            up=bool(msg["flags"] & IFF_UP),
            settings=BridgeSettings(**values),
            vlans=self.vlans(msg["index"]) if self._vlan_capable.get(msg["index"]) else (),
        )


def _kind(kind: str | None, data: Any) -> str:
    if kind is None:
        return HARDWARE
    if kind == "tun":
        return TUN_TYPES.get(data.get_attr("IFLA_TUN_TYPE") if data else 0, "tun")
    return kind


def _tap(data: Any) -> TapFlags:
    """Without IFLA_INFO_DATA (a kernel older than 4.15) the flags are unknown: say so."""
    if data is None:
        raise LuodError(
            "net-unsupported",
            "the kernel does not report tun/tap flags over netlink",
            "luod needs Linux >= 4.15 to record taps",
        )
    return TapFlags(
        owner=data.get_attr("IFLA_TUN_OWNER"),
        group=data.get_attr("IFLA_TUN_GROUP"),
        pi=bool(data.get_attr("IFLA_TUN_PI")),
        vnet_hdr=bool(data.get_attr("IFLA_TUN_VNET_HDR")),
        multi_queue=bool(data.get_attr("IFLA_TUN_MULTI_QUEUE")),
        persist=bool(data.get_attr("IFLA_TUN_PERSIST")),
        queues=data.get_attr("IFLA_TUN_NUM_QUEUES") or 0,
    )


def _port(data: Any) -> PortSettings | None:
    if data is None:
        return None
    values = {key: data.get_attr(attr) for key, attr in PORT_ATTRS.items()}
    if any(value is None for value in values.values()):
        return None  # a kernel too old to report them all: nothing exact to rebuild
    return PortSettings(
        **{k: v if k in ("cost", "priority") else bool(v) for k, v in values.items()}
    )


def _vlan_list(msg: Any) -> tuple[Vlan, ...]:
    spec = msg.get_attr("IFLA_AF_SPEC")
    if spec is None:
        return ()
    return tuple(
        Vlan(
            entry["vid"],
            pvid=bool(entry["flags"] & BRIDGE_VLAN_INFO_PVID),
            untagged=bool(entry["flags"] & BRIDGE_VLAN_INFO_UNTAGGED),
        )
        for entry in spec.get_attrs("IFLA_BRIDGE_VLAN_INFO")
    )


def _mac(value: str | None) -> str | None:
    """An Ethernet unicast address, or None (a tun has none; a virtual device no permanent)."""
    try:
        return None if not value else check_mac(value, "mac")
    except LuodError:
        return None
