"""What to do about one recorded device, given what exists now: pure, no netlink.

The rule (issue 15): luod recreates what is missing exactly as recorded, and leaves alone
whatever exists, whether the host's network configuration recreated it or it survived a luod
restart; every difference from the record is reported. A name taken by another kind of device
is a conflict, never replaced. A missing device of a kind luod cannot create (veth, hardware
NIC, SR-IOV VF) is reported as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from luod.core.nic import HARDWARE, BridgeRecord, NetRecord, NicRecord, Vlan
from luod.core.nic_actions import (
    Action,
    Configure,
    CreateBridge,
    CreateMacvtap,
    CreateTap,
    SetPort,
    SetVlans,
)

IGNORED: Final = frozenset({"tap.queues"})
"""Not the device's: the queues its VMM had attached when luod recorded it."""


class Verdict(StrEnum):
    REBUILD = "rebuild"  # missing: the actions recreate it
    KEEP = "keep"  # exists and matches the record
    DIFFERS = "differs"  # exists but differs: left alone, the differences reported
    CONFLICT = "conflict"  # the name is taken by another kind of device: left alone
    UNSUPPORTED = "unsupported"  # missing, and of a kind luod cannot create
    ABSENT = "absent"  # declared, but already missing when luod recorded


@dataclass(frozen=True)
class Difference:
    field: str  # dotted: "mtu", "tap.multi_queue", "vlans"
    recorded: Any
    current: Any

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "recorded": self.recorded, "current": self.current}

    def __str__(self) -> str:
        return f"{self.field}: recorded {self.recorded!r}, now {self.current!r}"


@dataclass(frozen=True)
class DevicePlan:
    name: str
    role: str  # "nic" or "bridge"
    verdict: Verdict
    actions: tuple[Action, ...] = ()
    differences: tuple[Difference, ...] = ()
    reason: str = ""


Current = NicRecord | BridgeRecord | None


def plan(record: NetRecord, current: Mapping[str, Current]) -> list[DevicePlan]:
    """Bridges first (the NICs attach to them), then the NICs, then what was absent."""
    plans = [plan_bridge(bridge, current.get(bridge.name)) for bridge in record.bridges]
    plans += [plan_nic(nic, current.get(nic.name)) for nic in record.nics]
    reason = "declared but missing when luod recorded: nothing to rebuild from"
    plans += [DevicePlan(name, "nic", Verdict.ABSENT, reason=reason) for name in record.absent]
    return plans


def plan_nic(recorded: NicRecord, current: Current) -> DevicePlan:
    if current is not None:
        return _existing(recorded, current, "nic")
    if not recorded.rebuildable:
        return DevicePlan(recorded.name, "nic", Verdict.UNSUPPORTED, reason=unsupported(recorded))
    return DevicePlan(recorded.name, "nic", Verdict.REBUILD, nic_actions(recorded))


def plan_bridge(recorded: BridgeRecord, current: Current) -> DevicePlan:
    if current is not None:
        return _existing(recorded, current, "bridge")
    # its MTU set again once created, as by a user: then the ports that join later (some
    # belong to other VMs, rebuilt after this one) do not lower it (br_mtu_auto_adjust)
    configure = Configure(recorded.name, mtu=recorded.mtu, up=recorded.up)
    return DevicePlan(recorded.name, "bridge", Verdict.REBUILD, (CreateBridge(recorded), configure))


def nic_actions(nic: NicRecord) -> tuple[Action, ...]:
    """Create, then one request: MAC, MTU and queue length (applied before the bridge is
    joined, so its automatic MTU sees the final one), the bridge, up. A tap without its VMM
    has no carrier: its port forwards nothing until ``fixups`` has run."""
    create: Action
    if nic.tap is not None:
        create = CreateTap(nic.name, nic.kind, nic.tap)
    elif nic.macvtap is not None:
        create = CreateMacvtap(nic.name, nic.macvtap)
    else:
        raise ValueError(f"{nic.kind} is not a kind luod creates")
    return (create, Configure(nic.name, nic.mac, nic.mtu, nic.txqlen, nic.master, nic.up))


def fixups(recorded: NicRecord | BridgeRecord, after: NicRecord | BridgeRecord) -> list[Action]:
    """What the creation steps leave to the kernel's defaults, put back as recorded once the
    rebuilt device has been read: its bridge port settings, and its VLANs (joining a bridge
    gives a port the bridge's default PVID). Nothing when the defaults were what was recorded
    (the usual case: no request), nor on a port that did not join its bridge."""
    actions: list[Action] = []
    if isinstance(recorded, NicRecord) and isinstance(after, NicRecord):
        if recorded.master is None or after.master != recorded.master:
            return []
        if recorded.port is not None and after.port != recorded.port:
            actions.append(SetPort(recorded.name, recorded.port))
    own = isinstance(recorded, BridgeRecord)
    add, remove = vlan_changes(recorded.vlans, after.vlans)
    if add or remove:
        actions.append(SetVlans(recorded.name, tuple(add), tuple(remove), own))
    return actions


def _existing(
    recorded: NicRecord | BridgeRecord, current: NicRecord | BridgeRecord, role: str
) -> DevicePlan:
    if _kind(recorded) != _kind(current):
        reason = f"exists as a {_kind(current)}, recorded as a {_kind(recorded)}: left alone"
        return DevicePlan(recorded.name, role, Verdict.CONFLICT, reason=reason)
    found = differences(recorded, current)
    verdict = Verdict.DIFFERS if found else Verdict.KEEP
    reason = "exists but differs from the record: left alone" if found else ""
    return DevicePlan(recorded.name, role, verdict, differences=found, reason=reason)


def _kind(link: NicRecord | BridgeRecord) -> str:
    return "bridge" if isinstance(link, BridgeRecord) else link.kind


def differences(
    recorded: NicRecord | BridgeRecord, current: NicRecord | BridgeRecord
) -> tuple[Difference, ...]:
    """Every recorded attribute whose current value differs (IGNORED aside); a group that one
    side lacks (``port`` of a device that is no bridge port) is one difference."""
    if recorded == current:  # the usual case, without building two dicts
        return ()
    return tuple(_differences(recorded.to_dict(), current.to_dict(), ""))


def _differences(
    before: Mapping[str, Any], after: Mapping[str, Any], prefix: str
) -> list[Difference]:
    found = []
    for key in [*before, *(k for k in after if k not in before)]:
        path, old, new = prefix + key, before.get(key), after.get(key)
        if path in IGNORED:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            found += _differences(old, new, path + ".")
        elif old != new:
            found.append(Difference(path, old, new))
    return found


def vlan_changes(want: tuple[Vlan, ...], have: tuple[Vlan, ...]) -> tuple[list[Vlan], list[Vlan]]:
    """(to add, to remove) to turn a port's VLANs ``have`` into exactly ``want``. Adding an
    existing vid with other flags replaces its flags, so only vids not wanted are removed."""
    wanted = {vlan.vid for vlan in want}
    add = [vlan for vlan in want if vlan not in have]
    remove = [vlan for vlan in have if vlan.vid not in wanted]
    return add, remove


def unsupported(nic: NicRecord) -> str:
    if nic.kind == HARDWARE:
        return "a hardware NIC (such as an SR-IOV VF), which luod cannot create"
    return f"a {nic.kind}, which luod cannot create (it rebuilds taps, tuns and macvtaps)"
