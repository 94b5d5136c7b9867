"""VM network plumbing as data: what a VMM declares, and what luod records of each device.

LUO preserves memory, not network devices: after the kexec every tap a VMM used is gone. At
prepare luod records what each declared device looks like (``NetRecord``, one per VM, saved in
the manifest); after the reboot it recreates what is missing exactly as recorded (luod.net).

Kinds luod can rebuild: ``tap`` and ``tun`` (tun/tap devices: flags fixed at creation, owner,
persistence) and ``macvtap`` (on a lower device found by name, or by permanent MAC if renamed);
bridges only when luod is configured to manage them. Any other kind (``veth``, a hardware NIC
or SR-IOV VF: ``device``...) is recorded so that it can be named in reports, never rebuilt.

Pure data, checked on the way in (luod.core.nic_fields): a record crosses the kexec and a
declaration comes from a VMM, so neither is trusted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

from luod.core.nic_fields import U32_MAX, Fields, bad, check_ifname, check_mac

VERSION: Final = 1
"""Of the NetRecord format. Readers accept older versions and refuse newer ones."""
TAP_KINDS: Final = ("tap", "tun")
REBUILDABLE: Final = (*TAP_KINDS, "macvtap")
MACVTAP_MODES: Final = ("private", "vepa", "bridge", "passthru", "source")
MTU_MIN, MTU_MAX = 0, U32_MAX  # IFLA_MTU: each device checks its own range (lo: 65536)
MAX_QUEUES: Final = 256  # MAX_TAP_QUEUES
VID_MIN, VID_MAX = 1, 4094
HARDWARE: Final = "device"
"""The kind of a device without IFLA_INFO_KIND: a driver's NIC, such as an SR-IOV VF."""


@dataclass(frozen=True)
class NicDecl:
    """A device as a VMM declares it: its name, and the bridge it should sit on, if any."""

    name: str
    bridge: str | None = None

    def __post_init__(self) -> None:
        check_ifname(self.name, "nic.name")
        if self.bridge is not None:
            check_ifname(self.bridge, "nic.bridge")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bridge": self.bridge}

    @classmethod
    def from_dict(cls, data: object, where: str = "nic") -> NicDecl:
        fields = Fields(data, where)
        decl = cls(fields.name("name"), fields.optional_name("bridge"))
        fields.done()
        return decl


@dataclass(frozen=True, order=True)
class Vlan:
    """One VLAN on a bridge port (or on the bridge itself): ``bridge vlan`` entries."""

    vid: int
    pvid: bool = False  # untagged ingress frames get this vid
    untagged: bool = False  # egress frames leave untagged

    def to_dict(self) -> dict[str, Any]:
        return {"vid": self.vid, "pvid": self.pvid, "untagged": self.untagged}

    @classmethod
    def from_dict(cls, data: object, where: str) -> Vlan:
        f = Fields(data, where)
        vlan = cls(f.integer("vid", VID_MIN, VID_MAX), f.boolean("pvid"), f.boolean("untagged"))
        f.done()
        return vlan


@dataclass(frozen=True)
class TapFlags:
    """What TUNSETIFF fixes when a tun/tap is created, and who may open it.

    ``queues`` is how many queues were attached when recorded (the VMM's open fds: a persistent
    tap without its VMM has none); it is reported, never rebuilt — the VMM attaches them again,
    which a ``multi_queue`` tap allows."""

    owner: int | None = None  # TUNSETOWNER uid; None: anyone with CAP_NET_ADMIN
    group: int | None = None  # TUNSETGROUP gid
    pi: bool = False  # packet information header: False is IFF_NO_PI
    vnet_hdr: bool = False  # IFF_VNET_HDR
    multi_queue: bool = False  # IFF_MULTI_QUEUE
    persist: bool = True  # outlives its last fd (TUNSETPERSIST); rebuilt taps always do
    queues: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "group": self.group,
            "pi": self.pi,
            "vnet_hdr": self.vnet_hdr,
            "multi_queue": self.multi_queue,
            "persist": self.persist,
            "queues": self.queues,
        }

    @classmethod
    def from_dict(cls, data: object, where: str) -> TapFlags:
        f = Fields(data, where)
        flags = cls(
            owner=f.optional_integer("owner", 0, U32_MAX - 1),
            group=f.optional_integer("group", 0, U32_MAX - 1),
            pi=f.boolean("pi"),
            vnet_hdr=f.boolean("vnet_hdr"),
            multi_queue=f.boolean("multi_queue"),
            persist=f.boolean("persist"),
            queues=f.integer("queues", 0, MAX_QUEUES, 0),
        )
        f.done()
        return flags


@dataclass(frozen=True)
class MacvtapLink:
    """The lower device of a macvtap, by name and, when it has one, its permanent MAC (which
    finds it again if it is renamed), and the macvlan mode."""

    lower: str
    lower_mac: str | None = None
    mode: str = "vepa"

    def to_dict(self) -> dict[str, Any]:
        return {"lower": self.lower, "lower_mac": self.lower_mac, "mode": self.mode}

    @classmethod
    def from_dict(cls, data: object, where: str) -> MacvtapLink:
        f = Fields(data, where)
        link = cls(f.name("lower"), f.mac("lower_mac"), f.choice("mode", MACVTAP_MODES))
        f.done()
        return link


@dataclass(frozen=True)
class PortSettings:
    """A bridge port's own settings (IFLA_BRPORT_*): the ones that change who talks to whom."""

    cost: int = 100
    priority: int = 32
    learning: bool = True
    unicast_flood: bool = True
    mcast_flood: bool = True
    bcast_flood: bool = True
    hairpin: bool = False
    isolated: bool = False
    guard: bool = False  # BPDU guard
    root_block: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, where: str) -> PortSettings:
        f = Fields(data, where)
        flags = {name: f.boolean(name) for name in _PORT_FLAGS}
        port = cls(f.integer("cost", 1, U32_MAX), f.integer("priority", 0, 63), **flags)
        f.done()
        return port


_PORT_FLAGS: Final = (
    "learning",
    "unicast_flood",
    "mcast_flood",
    "bcast_flood",
    "hairpin",
    "isolated",
    "guard",
    "root_block",
)


@dataclass(frozen=True)
class BridgeSettings:
    """A bridge's own settings (IFLA_BR_*). Times in centiseconds, as netlink carries them."""

    stp: bool = False
    vlan_filtering: bool = False
    default_pvid: int = 1  # 0: ports get no VLAN when they join
    forward_delay: int = 1500
    hello_time: int = 200
    max_age: int = 2000
    ageing_time: int = 30000
    priority: int = 32768

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, where: str) -> BridgeSettings:
        f = Fields(data, where)
        settings = cls(
            stp=f.boolean("stp"),
            vlan_filtering=f.boolean("vlan_filtering"),
            default_pvid=f.integer("default_pvid", 0, VID_MAX),
            forward_delay=f.integer("forward_delay", 0, U32_MAX),
            hello_time=f.integer("hello_time", 0, U32_MAX),
            max_age=f.integer("max_age", 0, U32_MAX),
            ageing_time=f.integer("ageing_time", 0, U32_MAX),
            priority=f.integer("priority", 0, 65535),
        )
        f.done()
        return settings


@dataclass(frozen=True)
class BridgeRecord:
    """A bridge luod manages: rebuilt with these settings when it is missing."""

    name: str
    mac: str | None
    mtu: int
    up: bool
    settings: BridgeSettings = field(default_factory=BridgeSettings)
    vlans: tuple[Vlan, ...] = ()  # the bridge's own (``self``) VLANs

    def __post_init__(self) -> None:
        _check_link(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mac": self.mac,
            "mtu": self.mtu,
            "up": self.up,
            "settings": self.settings.to_dict(),
            "vlans": [vlan.to_dict() for vlan in self.vlans],
        }

    @classmethod
    def from_dict(cls, data: object, where: str) -> BridgeRecord:
        f = Fields(data, where)
        bridge = cls(
            name=f.name("name"),
            mac=f.mac("mac"),
            mtu=f.integer("mtu", MTU_MIN, MTU_MAX),
            up=f.boolean("up"),
            settings=BridgeSettings.from_dict(f.raw("settings"), f.at("settings")),
            vlans=_vlans(f, "vlans"),
        )
        f.done()
        return bridge


@dataclass(frozen=True)
class NicRecord:
    """One VM network device as the kernel showed it when luod recorded it."""

    name: str
    kind: str  # tap, tun, macvtap, or what luod cannot rebuild: veth, device (hardware)...
    mac: str | None
    mtu: int
    up: bool  # IFF_UP (the carrier comes with the VMM's fds)
    txqlen: int = 1000
    tap: TapFlags | None = None
    macvtap: MacvtapLink | None = None
    master: str | None = None  # the bridge it is a port of
    port: PortSettings | None = None
    vlans: tuple[Vlan, ...] = ()

    def __post_init__(self) -> None:
        where = f"nic {self.name!r}"
        _check_link(self)
        if (self.kind in TAP_KINDS) != (self.tap is not None):
            raise bad("bad-nic-record", where, "tap flags go with kind tap or tun only", "")
        if (self.kind == "macvtap") != (self.macvtap is not None):
            raise bad("bad-nic-record", where, "a macvtap needs its lower device", "")
        if self.master is None and (self.port is not None or self.vlans):
            raise bad("bad-nic-record", where, "port settings and VLANs need a master", "")

    @property
    def rebuildable(self) -> bool:
        return self.kind in REBUILDABLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "mac": self.mac,
            "mtu": self.mtu,
            "up": self.up,
            "txqlen": self.txqlen,
            "tap": None if self.tap is None else self.tap.to_dict(),
            "macvtap": None if self.macvtap is None else self.macvtap.to_dict(),
            "master": self.master,
            "port": None if self.port is None else self.port.to_dict(),
            "vlans": [vlan.to_dict() for vlan in self.vlans],
        }

    @classmethod
    def from_dict(cls, data: object, where: str) -> NicRecord:
        f = Fields(data, where)
        kind = f.raw("kind")
        if not isinstance(kind, str) or not 0 < len(kind) <= 32:
            raise bad("bad-nic-record", f.at("kind"), f"{kind!r} is not a kind", "")
        record = cls(
            name=f.name("name"),
            kind=kind,
            mac=f.mac("mac"),
            mtu=f.integer("mtu", MTU_MIN, MTU_MAX),
            up=f.boolean("up"),
            txqlen=f.integer("txqlen", 0, U32_MAX),
            tap=_optional(f, "tap", TapFlags.from_dict),
            macvtap=_optional(f, "macvtap", MacvtapLink.from_dict),
            master=f.optional_name("master"),
            port=_optional(f, "port", PortSettings.from_dict),
            vlans=_vlans(f, "vlans"),
        )
        f.done()
        return record


@dataclass(frozen=True)
class NetRecord:
    """One VM's network plumbing, as recorded at prepare: it goes into the manifest.

    ``absent``: declared, but not there when luod recorded (so not rebuilt, and said so)."""

    nics: tuple[NicRecord, ...] = ()
    bridges: tuple[BridgeRecord, ...] = ()  # the managed bridges its NICs sit on
    absent: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [n.name for n in self.nics] + [b.name for b in self.bridges] + list(self.absent)
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise bad("bad-nic-record", "net", f"{', '.join(duplicates)} recorded twice", "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "nics": [nic.to_dict() for nic in self.nics],
            "bridges": [bridge.to_dict() for bridge in self.bridges],
            "absent": list(self.absent),
        }

    @classmethod
    def from_dict(cls, data: object, where: str = "net") -> NetRecord:
        f = Fields(data, where)
        version = f.integer("version", 1, U32_MAX)
        if version > VERSION:
            raise bad(
                "bad-nic-record",
                f.at("version"),
                f"format {version}, this luod reads <= {VERSION}",
                "a newer luod recorded it: run that version (or newer) of luod",
            )
        record = cls(
            nics=tuple(
                NicRecord.from_dict(item, f"{where}.nics[{i}]")
                for i, item in enumerate(f.items("nics"))
            ),
            bridges=tuple(
                BridgeRecord.from_dict(item, f"{where}.bridges[{i}]")
                for i, item in enumerate(f.items("bridges"))
            ),
            absent=tuple(
                check_ifname(item, f"{where}.absent[{i}]")
                for i, item in enumerate(f.items("absent"))
            ),
        )
        f.done()
        return record


def _optional(f: Fields, key: str, parse: Any) -> Any:
    value = f.raw(key, None)
    return None if value is None else parse(value, f.at(key))


def _vlans(f: Fields, key: str) -> tuple[Vlan, ...]:
    items = f.items(key)
    return tuple(Vlan.from_dict(item, f"{f.at(key)}[{i}]") for i, item in enumerate(items))


def _check_link(link: NicRecord | BridgeRecord) -> None:
    """Name, MAC, MTU and VLANs of a device; stores its MAC in lower case, its VLANs sorted."""
    where = f"device {link.name!r}"
    check_ifname(link.name, where)
    if link.mac is not None:
        object.__setattr__(link, "mac", check_mac(link.mac, f"{where} mac"))
    if not MTU_MIN <= link.mtu <= MTU_MAX:
        raise bad("bad-nic-record", where, f"MTU {link.mtu} outside [{MTU_MIN}, {MTU_MAX}]", "")
    vids = [vlan.vid for vlan in link.vlans]
    if len(set(vids)) != len(vids) or any(not VID_MIN <= vid <= VID_MAX for vid in vids):
        raise bad(
            "bad-nic-vlan",
            where,
            f"VLAN ids {vids}: each in [{VID_MIN}, {VID_MAX}], once",
            "a port has one entry per VLAN id",
        )
    if sum(vlan.pvid for vlan in link.vlans) > 1:
        raise bad("bad-nic-vlan", where, "more than one PVID", "a port has at most one PVID")
    object.__setattr__(link, "vlans", tuple(sorted(link.vlans)))
