"""Run the steps of luod.core.nic_plan over rtnetlink (pyroute2): one request per step (one
per VLAN added or removed), devices addressed by name.

tun/tap devices are created by pyroute2 with the TUNSETIFF / TUNSETOWNER / TUNSETGROUP /
TUNSETPERSIST ioctls on /dev/net/tun (the kernel has no netlink request that creates one), from
the same IFLA_TUN_* attributes that luod.net.rtnl reads. Everything else is RTM_NEWLINK, and
``bridge vlan`` changes are RTM_SETLINK/RTM_DELLINK of family AF_BRIDGE.
"""

from __future__ import annotations

import errno
import os
from typing import Final

from luod.core.nic import Vlan
from luod.core.nic_actions import (
    Action,
    Configure,
    CreateBridge,
    CreateMacvtap,
    CreateTap,
    SetPort,
    SetVlans,
)
from luod.net.rtnl import (
    BRIDGE_VLAN_INFO_PVID,
    BRIDGE_VLAN_INFO_UNTAGGED,
    Reader,
)

HINTS: Final = {
    errno.EPERM: "luod needs CAP_NET_ADMIN",
    errno.EEXIST: "a device of that name appeared meanwhile",
    errno.EOPNOTSUPP: "the kernel lacks this feature (bridge VLANs need "
    "CONFIG_BRIDGE_VLAN_FILTERING)",
    errno.EBUSY: "the device is in use",
}


class StepFailed(Exception):
    """A step that could not be done, said for the operator (the cause, when any, chained)."""


def explain(exc: BaseException) -> str:
    if isinstance(exc, StepFailed):
        return str(exc)
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        name = errno.errorcode.get(code, str(code))
        hint = HINTS.get(code)
        return f"{os.strerror(code)} ({name})" + (f": {hint}" if hint else "")
    return f"{type(exc).__name__}: {exc}"


class Executor:
    """Runs actions, addressing devices by name (the kernel resolves IFLA_IFNAME)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.ipr = reader.ipr

    def run(self, action: Action) -> None:
        match action:
            case CreateTap():
                self._create_tap(action)
            case CreateMacvtap():
                self._create_macvtap(action)
            case CreateBridge():
                self._create_bridge(action)
            case Configure():
                self._configure(action)
            case SetPort():
                self._set_port(action)
            case SetVlans():
                self._set_vlans(action)

    def _configure(self, action: Configure) -> None:
        """All in one request; a missing bridge fails the step, after the rest was set."""
        master = None if action.master is None else self.reader.index(action.master)
        attrs = {"address": action.mac, "mtu": action.mtu, "txqlen": action.txqlen}
        attrs |= {"master": master, "state": "up" if action.up else None}
        present = {key: value for key, value in attrs.items() if value is not None}
        if present:
            self.ipr.link("set", ifname=action.name, **present)
        if action.master is not None and master is None:
            raise StepFailed(f"bridge {action.master} does not exist (the rest was set)")

    def _create_tap(self, action: CreateTap) -> None:
        flags = action.flags
        attrs = {"tun_owner": flags.owner, "tun_group": flags.group}
        self.ipr.link(
            "add",
            ifname=action.name,
            kind="tun",
            tun_type=2 if action.mode == "tap" else 1,
            tun_pi=int(flags.pi),
            tun_vnet_hdr=int(flags.vnet_hdr),
            tun_multi_queue=int(flags.multi_queue),
            **{key: value for key, value in attrs.items() if value is not None},
        )

    def _create_macvtap(self, action: CreateMacvtap) -> None:
        lower = self._lower(action.link.lower, action.link.lower_mac)
        self.ipr.link(
            "add", ifname=action.name, kind="macvtap", link=lower, macvtap_mode=action.link.mode
        )

    def _lower(self, name: str, mac: str | None) -> int:
        """By name; if that name is gone (renamed at boot), by permanent MAC."""
        msg = self.reader.link(name)
        if msg is not None:
            return int(msg["index"])
        if mac is not None:
            for link in self.ipr.get_links():
                if link.get_attr("IFLA_PERM_ADDRESS") == mac:
                    return int(link["index"])
        found = f" nor any device with permanent MAC {mac}" if mac else ""
        raise StepFailed(f"lower device {name} does not exist{found}")

    def _create_bridge(self, action: CreateBridge) -> None:
        bridge, settings = action.bridge, action.bridge.settings
        vlan_attrs = {}  # sent only when set: a kernel without VLAN filtering refuses even 0
        if settings.vlan_filtering:
            vlan_attrs["br_vlan_filtering"] = 1
        if settings.default_pvid != 1:
            vlan_attrs["br_vlan_default_pvid"] = settings.default_pvid
        self.ipr.link(
            "add",
            ifname=bridge.name,
            kind="bridge",
            br_stp_state=int(settings.stp),
            br_forward_delay=settings.forward_delay,
            br_hello_time=settings.hello_time,
            br_max_age=settings.max_age,
            br_ageing_time=settings.ageing_time,
            br_priority=settings.priority,
            mtu=bridge.mtu,
            **({"address": bridge.mac} if bridge.mac else {}),
            **vlan_attrs,
        )

    def _set_port(self, action: SetPort) -> None:
        port = action.port
        self.ipr.brport(
            "set",
            index=self._index(action.name),
            cost=port.cost,
            priority=port.priority,
            learning=int(port.learning),
            unicast_flood=int(port.unicast_flood),
            mcast_flood=int(port.mcast_flood),
            bcast_flood=int(port.bcast_flood),
            mode=int(port.hairpin),
            isolated=int(port.isolated),
            guard=int(port.guard),
            protect=int(port.root_block),
        )

    def _set_vlans(self, action: SetVlans) -> None:
        index = self._index(action.name)
        own = {"vlan_flags": "self"} if action.own else {}
        for vlan in action.remove:
            self.ipr.vlan_filter("del", index=index, vlan_info={"vid": vlan.vid}, **own)
        for vlan in action.add:
            info = {"vid": vlan.vid, "flags": _vlan_flags(vlan)}
            self.ipr.vlan_filter("add", index=index, vlan_info=info, **own)
        self.reader.forget_vlans()

    def _index(self, name: str) -> int:
        index = self.reader.index(name)
        if index is None:
            raise StepFailed(f"{name} does not exist")
        return index


def _vlan_flags(vlan: Vlan) -> int:
    return (BRIDGE_VLAN_INFO_PVID if vlan.pvid else 0) | (
        BRIDGE_VLAN_INFO_UNTAGGED if vlan.untagged else 0
    )
