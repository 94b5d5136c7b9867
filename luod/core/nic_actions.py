"""The steps that recreate a device, as data: luod.core.nic_plan chooses them, luod.net runs
them (one netlink request or ioctl sequence each; a VLAN change is one request per VLAN)."""

from __future__ import annotations

from dataclasses import dataclass

from luod.core.nic import BridgeRecord, MacvtapLink, PortSettings, TapFlags, Vlan


@dataclass(frozen=True)
class CreateTap:
    name: str
    mode: str  # "tap" or "tun"
    flags: TapFlags

    def __str__(self) -> str:
        flags = [n for n in ("pi", "vnet_hdr", "multi_queue") if getattr(self.flags, n)]
        flags += [f"owner {self.flags.owner}"] if self.flags.owner is not None else []
        flags += [f"group {self.flags.group}"] if self.flags.group is not None else []
        return f"create {self.mode} {self.name} ({', '.join([*flags, 'persistent'])})"


@dataclass(frozen=True)
class CreateMacvtap:
    name: str
    link: MacvtapLink

    def __str__(self) -> str:
        return f"create macvtap {self.name} on {self.link.lower} (mode {self.link.mode})"


@dataclass(frozen=True)
class CreateBridge:
    bridge: BridgeRecord

    @property
    def name(self) -> str:
        return self.bridge.name

    def __str__(self) -> str:
        settings = self.bridge.settings
        return (
            f"create bridge {self.name} (mac {self.bridge.mac}, mtu {self.bridge.mtu}, "
            f"stp {int(settings.stp)}, vlan_filtering {int(settings.vlan_filtering)})"
        )


@dataclass(frozen=True)
class Configure:
    """One RTM_NEWLINK: MAC, MTU, queue length, the bridge to join, up. None: left as is."""

    name: str
    mac: str | None = None
    mtu: int | None = None
    txqlen: int | None = None
    master: str | None = None
    up: bool = False

    def __str__(self) -> str:
        values = {"mac": self.mac, "mtu": self.mtu, "txqlen": self.txqlen, "master": self.master}
        words = [f"{k} {v}" for k, v in values.items() if v is not None]
        return f"set {self.name} " + " ".join(words + (["up"] if self.up else []))


@dataclass(frozen=True)
class SetPort:
    name: str
    port: PortSettings

    def __str__(self) -> str:
        return f"set bridge port {self.name} settings"


@dataclass(frozen=True)
class SetVlans:
    """Changes that turn the VLANs of a port (or of a bridge itself: ``own``) into the
    recorded ones (luod.core.nic_plan.vlan_changes)."""

    name: str
    add: tuple[Vlan, ...]
    remove: tuple[Vlan, ...]
    own: bool = False

    def __str__(self) -> str:
        def vids(vlans: tuple[Vlan, ...]) -> str:
            return ",".join(
                f"{v.vid}{' pvid' if v.pvid else ''}{' untagged' if v.untagged else ''}"
                for v in vlans
            )

        return f"VLANs of {self.name}: add [{vids(self.add)}], remove [{vids(self.remove)}]"


Action = CreateTap | CreateMacvtap | CreateBridge | Configure | SetPort | SetVlans
CREATES = (CreateTap, CreateMacvtap, CreateBridge)
