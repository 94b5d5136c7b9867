"""The steps that recreate a device, as data: luod.core.nic_plan chooses them, luod.net runs
them (one netlink request each, or two for VLANs: read, then change)."""

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
class SetLink:
    name: str
    mac: str | None
    mtu: int
    txqlen: int | None = None  # None: left as it is

    def __str__(self) -> str:
        values = {"mac": self.mac, "mtu": self.mtu, "txqlen": self.txqlen}
        return f"set {self.name} " + " ".join(
            f"{k} {v}" for k, v in values.items() if v is not None
        )


@dataclass(frozen=True)
class Attach:
    name: str
    master: str

    def __str__(self) -> str:
        return f"attach {self.name} to bridge {self.master}"


@dataclass(frozen=True)
class SetPort:
    name: str
    port: PortSettings

    def __str__(self) -> str:
        return f"set bridge port {self.name} settings"


@dataclass(frozen=True)
class SetVlans:
    name: str
    vlans: tuple[Vlan, ...]
    own: bool  # the bridge's own VLANs (``self``), not a port's

    def __str__(self) -> str:
        vids = ",".join(
            f"{v.vid}{' pvid' if v.pvid else ''}{' untagged' if v.untagged else ''}"
            for v in self.vlans
        )
        return f"set VLANs of {self.name} to [{vids}]"


@dataclass(frozen=True)
class Up:
    name: str

    def __str__(self) -> str:
        return f"set {self.name} up"


Action = CreateTap | CreateMacvtap | CreateBridge | SetLink | Attach | SetPort | SetVlans | Up
CREATES = (CreateTap, CreateMacvtap, CreateBridge)
