"""Scenarios for luod.net's record and rebuild, each run in a fresh network namespace of its own
(``python -m tests.integration.net_lab``, as root): each builds devices with pyroute2,
records them, deletes some, rebuilds; one JSON line says what every scenario saw. The
asserting is done by tests/integration/test_net_rebuild.py; nothing here touches the host's
interfaces. Bridge VLANs are used when the kernel has CONFIG_BRIDGE_VLAN_FILTERING."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from luod.core.nic import NetRecord, NicDecl
from luod.net.plumbing import Plumbing

CLONE_NEWNET = 0x40000000
TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000  # <linux/if_tun.h>, x86_64
DECLS = [NicDecl("vm1-net0", "br-lab"), NicDecl("vm1-net1", "br-lab")]
MACS = {"br-lab": "52:54:00:00:00:01", "vm1-net0": "52:54:00:00:01:00"}
MACS["vm1-net1"] = "52:54:00:00:01:01"


def vlans_supported(ipr: Any) -> bool:
    try:
        ipr.link("add", ifname="br-probe", kind="bridge", br_vlan_filtering=1)
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            return False
        raise
    ipr.link("del", ifname="br-probe")
    return True


def macvtap_supported(ipr: Any) -> bool:
    """CONFIG_MACVTAP (the VM tests' kernel has none)."""
    ipr.link("add", ifname="veth-probe", kind="veth", peer="veth-probe1")
    try:
        ipr.link("add", ifname="mvtap-probe", kind="macvtap", link=index(ipr, "veth-probe"))
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            return False
        raise
    finally:
        ipr.link("del", ifname="veth-probe")
    return True


def index(ipr: Any, name: str) -> int:
    return int(ipr.link("get", ifname=name)[0]["index"])


def build_lab(ipr: Any, vlans: bool) -> None:
    """br-lab (STP on, non-default timers, VLAN filtering when available) with two taps: net0
    multi-queue with a vnet header, net1 isolated with its own cost; VLANs on both ports."""
    ipr.link(
        "add",
        ifname="br-lab",
        kind="bridge",
        br_stp_state=1,
        br_forward_delay=400,
        br_priority=4096,
        mtu=9000,
        address=MACS["br-lab"],
        **({"br_vlan_filtering": 1} if vlans else {}),
    )
    ipr.link("add", ifname="vm1-net0", kind="tun", tun_type=2, tun_owner=1000, tun_group=1000,
             tun_multi_queue=1, tun_vnet_hdr=1)  # fmt: skip
    ipr.link("add", ifname="vm1-net1", kind="tun", tun_type=2, tun_owner=1001)
    for name, mtu in (("vm1-net0", 9000), ("vm1-net1", 1500)):
        ipr.link("set", index=index(ipr, name), address=MACS[name], mtu=mtu, txqlen=2000)
        ipr.link("set", index=index(ipr, name), master=index(ipr, "br-lab"), state="up")
    ipr.brport("set", index=index(ipr, "vm1-net1"), isolated=1, cost=7, learning=0)
    ipr.link("set", index=index(ipr, "br-lab"), state="up")
    if vlans:
        net0, net1 = index(ipr, "vm1-net0"), index(ipr, "vm1-net1")
        ipr.vlan_filter("add", index=net0, vlan_info={"vid": 10, "flags": 6})  # pvid untagged
        ipr.vlan_filter("add", index=net0, vlan_info={"vid": 20})
        ipr.vlan_filter("del", index=net1, vlan_info={"vid": 1})
        ipr.vlan_filter("add", index=net1, vlan_info={"vid": 30})
        ipr.vlan_filter("add", index=net1, vlan_info={"vid": 31, "flags": 4})  # untagged


def indexes(ipr: Any) -> dict[str, int]:
    return {name: index(ipr, name) for name in ("br-lab", "vm1-net0", "vm1-net1")}


def delete(ipr: Any, *names: str) -> None:
    for name in names:
        ipr.link("del", index=index(ipr, name))


def round_trip(ipr: Any, net: Plumbing) -> dict[str, Any]:
    """Everything deleted (as a kexec does), rebuilt, recorded again."""
    build_lab(ipr, vlans := vlans_supported(ipr))
    record = net.record(DECLS)
    delete(ipr, "vm1-net0", "vm1-net1", "br-lab")
    report = net.rebuild(NetRecord.from_dict(json.loads(json.dumps(record.to_dict()))))
    return {"vlans": vlans, "record": record.to_dict(), "report": report.to_dict(),
            "again": net.record(DECLS).to_dict()}  # fmt: skip


def partial(ipr: Any, net: Plumbing) -> dict[str, Any]:
    """net0 and the bridge survived (net0 with a changed MTU); net1 is gone."""
    build_lab(ipr, vlans_supported(ipr))
    record = net.record(DECLS)
    delete(ipr, "vm1-net1")
    ipr.link("set", index=index(ipr, "vm1-net0"), mtu=1400)
    before = {name: index(ipr, name) for name in ("br-lab", "vm1-net0")}
    report = net.rebuild(record)
    return {"report": report.to_dict(), "before": before, "after": indexes(ipr),
            "again": net.record(DECLS).to_dict()}  # fmt: skip


def restart(ipr: Any, net: Plumbing) -> dict[str, Any]:
    """luod restarted without a kexec: everything is there and matches."""
    build_lab(ipr, vlans_supported(ipr))
    record = net.record(DECLS)
    before = indexes(ipr)
    report = net.rebuild(record)
    return {"report": report.to_dict(), "before": before, "after": indexes(ipr)}


def unrebuildable(ipr: Any, net: Plumbing) -> dict[str, Any]:
    """A veth (cannot be rebuilt), a tap whose name a veth took, a tap on a bridge luod does
    not manage (gone), a tap MTU the kernel refuses, and a tap and a macvtap that are fine."""
    ipr.link("add", ifname="veth-a", kind="veth", peer="veth-b")
    ipr.link("add", ifname="br-other", kind="bridge")
    for name in ("tap-taken", "tap-ok", "tap-orphan", "tap-big"):
        ipr.link("add", ifname=name, kind="tun", tun_type=2, tun_owner=1000)
    ipr.link("set", index=index(ipr, "tap-orphan"), master=index(ipr, "br-other"))
    names = ["veth-b", "tap-taken", "tap-ok", "tap-orphan", "tap-big"]
    if macvtap := macvtap_supported(ipr):
        ipr.link("add", ifname="mvtap0", kind="macvtap", link=index(ipr, "veth-a"),
                 macvtap_mode="bridge")  # fmt: skip
        names.append("mvtap0")
    record = net.record([NicDecl(name) for name in names])
    data = record.to_dict()
    big = next(nic for nic in data["nics"] if nic["name"] == "tap-big")
    big["mtu"] = 65535  # valid in a record, above a tap's maximum (65521)
    delete(ipr, "veth-a", "tap-taken", "tap-ok", "tap-orphan", "tap-big", "br-other")
    ipr.link("add", ifname="tap-taken", kind="veth", peer="veth-e")
    ipr.link("add", ifname="veth-a", kind="veth", peer="veth-f")  # the macvtap's lower is back
    report = net.rebuild(NetRecord.from_dict(data))
    return {"record": record.to_dict(), "report": report.to_dict(), "macvtap": macvtap,
            "vlans": vlans_supported(ipr)}  # fmt: skip


def preflight(ipr: Any, net: Plumbing) -> dict[str, Any]:
    """One VM with a bit of everything luod warns about, one VM with nothing to say."""
    build_lab(ipr, vlans=False)
    ipr.link("add", ifname="br-host", kind="bridge")
    ipr.link("add", ifname="veth-a", kind="veth", peer="veth-b")
    if macvtap := macvtap_supported(ipr):
        ipr.link("add", ifname="mvtap0", kind="macvtap", link=index(ipr, "veth-a"))
    ipr.link("add", ifname="tap-host", kind="tun", tun_type=2)
    ipr.link("set", index=index(ipr, "tap-host"), master=index(ipr, "br-host"))
    with open_tap("tap-transient"):  # as QEMU's own tap: gone with its fd
        decls = {
            "vm1": DECLS,
            "vm2": [NicDecl(name) for name in ("veth-b", "mvtap0", "tap-transient", "nope0")]
            + [NicDecl("tap-host", "br-host"), NicDecl("vm1-net0", "br-elsewhere")],
        }
        found = net.preflight(decls)
    return {"warnings": [warning.to_dict() for warning in found], "macvtap": macvtap}


@contextlib.contextmanager
def open_tap(name: str) -> Iterator[None]:
    """A tap that is not persistent: TUNSETIFF on an fd kept open, no TUNSETPERSIST."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        request = struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, request)
        yield
    finally:
        os.close(fd)


SCENARIOS: dict[str, Callable[[Any, Plumbing], dict[str, Any]]] = {
    "round_trip": round_trip,
    "partial": partial,
    "restart": restart,
    "unrebuildable": unrebuildable,
    "preflight": preflight,
}


def main() -> None:
    """Every scenario, each in a network namespace of its own (made with unshare(2) here: one
    process, one import of pyroute2, which costs seconds in a TCG guest)."""
    results = {}
    for name, scenario in SCENARIOS.items():
        new_netns()
        with IPRoute() as ipr, Plumbing(managed_bridges={"br-lab"}) as net:
            results[name] = scenario(ipr, net)
    print(json.dumps(results))


def new_netns() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


if __name__ == "__main__":
    main()
