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


class Attrs:
    """A netlink message's attributes by name, first one wins (pyroute2's get_attr scans the
    whole list on each call: a link message has about 60)."""

    def __init__(self, nla: Any) -> None:
        self.slots: dict[str, Any] = {}
        for slot in nla["attrs"] if nla is not None else ():
            self.slots.setdefault(slot[0], slot)

    def __call__(self, name: str) -> Any:
        slot = self.slots.get(name)
        return None if slot is None else slot[1]


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
        from luod.net.iproute import netlink_error

        query = {"ifname": name} if name is not None else {"index": index}
        try:
            msg = self.ipr.link("get", **query)[0]
        except netlink_error() as exc:
            if getattr(exc, "code", None) == errno.ENODEV:
                return None
            raise
        self._remember(msg)
        return msg

    def _remember(self, msg: Any) -> None:
        attr = Attrs(msg)
        index, name = msg["index"], attr("IFLA_IFNAME")
        self._names[index], self._indexes[name] = name, index
        info = Attrs(attr("IFLA_LINKINFO"))
        if info("IFLA_INFO_KIND") == "bridge":
            # a kernel without CONFIG_BRIDGE_VLAN_FILTERING has no VLANs, and no default PVID
            data = Attrs(info("IFLA_INFO_DATA"))
            self._vlan_capable[index] = data("IFLA_BR_VLAN_DEFAULT_PVID") is not None

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
        attr = Attrs(msg)
        info = Attrs(attr("IFLA_LINKINFO"))
        kind, data = info("IFLA_INFO_KIND"), Attrs(info("IFLA_INFO_DATA"))
        if kind == "bridge":
            return self._bridge(msg, attr, data)
        master = self._master(attr, info)
        return NicRecord(
            name=attr("IFLA_IFNAME"),
            kind=_kind(kind, data),
            mac=_mac(attr("IFLA_ADDRESS")),
            mtu=attr("IFLA_MTU"),
            up=bool(msg["flags"] & IFF_UP),
            txqlen=attr("IFLA_TXQLEN") or 0,
            tap=_tap(data) if kind == "tun" else None,
            macvtap=self._macvtap(attr, data) if kind == "macvtap" else None,
            master=master,
            port=_port(Attrs(info("IFLA_INFO_SLAVE_DATA"))) if master else None,
            vlans=self._port_vlans(msg["index"], attr("IFLA_MASTER")) if master else (),
        )

    def name(self, index: int) -> str:
        if index in self._names:
            return self._names[index]
        msg = self.link(index=index)
        if msg is None:
            raise LuodError("net-changed", f"device {index} vanished while luod read it", "retry")
        return self._names[index]

    def _port_vlans(self, index: int, master: int) -> tuple[Vlan, ...]:
        if master not in self._vlan_capable:
            self.link(index=master)
        return self.vlans(index) if self._vlan_capable.get(master) else ()

    def vlans(self, index: int) -> tuple[Vlan, ...]:
        """The VLANs of a port or bridge: one AF_BRIDGE dump per Reader (forget_vlans: again)."""
        if self._vlans is None:
            self._vlans = {msg["index"]: _vlan_list(msg) for msg in self.ipr.get_vlans()}
        return self._vlans.get(index, ())

    def forget_vlans(self) -> None:
        self._vlans = None

    def _master(self, attr: Attrs, info: Attrs) -> str | None:
        index = attr("IFLA_MASTER")
        if not index or info("IFLA_INFO_SLAVE_KIND") != "bridge":
            return None  # luod rebuilds bridge ports only (an OVS port is OVS's to restore)
        return self.name(index)

    def _macvtap(self, attr: Attrs, data: Attrs) -> MacvtapLink:
        msg = self.link(index=attr("IFLA_LINK"))
        if msg is None:
            raise LuodError("net-changed", "a macvtap's lower device vanished", "retry")
        lower = Attrs(msg)
        return MacvtapLink(
            lower("IFLA_IFNAME"),
            _mac(lower("IFLA_PERM_ADDRESS")),
            str(data("IFLA_MACVTAP_MODE") or "vepa"),
        )

    def _bridge(self, msg: Any, attr: Attrs, data: Attrs) -> BridgeRecord:
        values = {key: data(name) for key, name in BRIDGE_ATTRS.items()}
        if values["default_pvid"] is None:  # a kernel without VLAN filtering: its default
            values["default_pvid"] = 1
        values["stp"] = bool(values["stp"])  # kernel (1) or user-space (2) STP: on
        values["vlan_filtering"] = bool(values["vlan_filtering"])
        return BridgeRecord(
            name=attr("IFLA_IFNAME"),
            mac=_mac(attr("IFLA_ADDRESS")),
            mtu=attr("IFLA_MTU"),
            up=bool(msg["flags"] & IFF_UP),
            settings=BridgeSettings(**values),
            vlans=self.vlans(msg["index"]) if self._vlan_capable.get(msg["index"]) else (),
        )


def _kind(kind: str | None, data: Attrs) -> str:
    if kind is None:
        return HARDWARE
    if kind == "tun":
        return TUN_TYPES.get(data("IFLA_TUN_TYPE") or 0, "tun")
    return kind


def _tap(data: Attrs) -> TapFlags:
    """Without IFLA_INFO_DATA (a kernel older than 4.15) the flags are unknown: say so."""
    if data("IFLA_TUN_TYPE") is None:
        raise LuodError(
            "net-unsupported",
            "the kernel does not report tun/tap flags over netlink",
            "luod needs Linux >= 4.15 to record taps",
        )
    return TapFlags(
        owner=data("IFLA_TUN_OWNER"),
        group=data("IFLA_TUN_GROUP"),
        pi=bool(data("IFLA_TUN_PI")),
        vnet_hdr=bool(data("IFLA_TUN_VNET_HDR")),
        multi_queue=bool(data("IFLA_TUN_MULTI_QUEUE")),
        persist=bool(data("IFLA_TUN_PERSIST")),
        queues=data("IFLA_TUN_NUM_QUEUES") or 0,
    )


def _port(data: Attrs) -> PortSettings | None:
    values = {key: data(name) for key, name in PORT_ATTRS.items()}
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
