"""What luod tells about a VM's network plumbing: the rebuild report after the kexec (per device,
with every difference and every failure), and the preflight warnings before it. Pure data."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from luod.core.nic import BridgeRecord, NetRecord, NicDecl, NicRecord
from luod.core.nic_plan import DevicePlan, Difference, Verdict, differences, unsupported


class Status(StrEnum):
    KEPT = "kept"  # existed and matched the record: untouched
    REBUILT = "rebuilt"  # recreated, and now matches the record
    DIFFERS = "differs"  # existed but differs from the record: untouched
    PARTIAL = "partial"  # recreated, but some step failed or it does not match the record
    CONFLICT = "conflict"  # its name is taken by another kind of device: untouched
    UNSUPPORTED = "unsupported"  # missing, of a kind luod cannot create
    FAILED = "failed"  # missing, and creating it failed
    ABSENT = "absent"  # already missing when luod recorded


PRESENT = frozenset({Status.KEPT, Status.REBUILT, Status.DIFFERS, Status.PARTIAL})
EXACT = frozenset({Status.KEPT, Status.REBUILT})
_UNTOUCHED = {
    Verdict.KEEP: Status.KEPT,
    Verdict.DIFFERS: Status.DIFFERS,
    Verdict.CONFLICT: Status.CONFLICT,
    Verdict.UNSUPPORTED: Status.UNSUPPORTED,
    Verdict.ABSENT: Status.ABSENT,
}


@dataclass(frozen=True)
class DeviceOutcome:
    name: str
    role: str  # "nic" or "bridge"
    status: Status
    done: tuple[str, ...] = ()  # the steps that succeeded, in order
    errors: tuple[str, ...] = ()  # "step: why" for each step that failed
    differences: tuple[Difference, ...] = ()  # from the record, as the device is now
    reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "status": str(self.status),
            "done": list(self.done),
            "errors": list(self.errors),
            "differences": [d.to_dict() for d in self.differences],
            "reason": self.reason,
            "seconds": self.seconds,
        }


def untouched(planned: DevicePlan) -> DeviceOutcome:
    """The outcome of a device whose plan was not to rebuild it."""
    status = _UNTOUCHED[planned.verdict]
    return DeviceOutcome(
        planned.name, planned.role, status, differences=planned.differences, reason=planned.reason
    )


def rebuilt(
    planned: DevicePlan,
    done: Sequence[str],
    errors: Sequence[str],
    after: NicRecord | BridgeRecord | None,
    recorded: NicRecord | BridgeRecord,
    seconds: float,
) -> DeviceOutcome:
    """The outcome of a device luod recreated: ``after`` is the device as it now is."""
    found: tuple[Difference, ...] = ()
    if after is None:
        reason = errors[0] if errors else "it does not exist after the rebuild"
        status = Status.FAILED
    else:
        found = differences(recorded, after)
        status = Status.PARTIAL if errors or found else Status.REBUILT
        reason = "rebuilt, but not exactly as recorded" if status is Status.PARTIAL else ""
    return DeviceOutcome(
        planned.name, planned.role, status, tuple(done), tuple(errors), found, reason, seconds
    )


@dataclass(frozen=True)
class RebuildReport:
    """One VM's plumbing after ``luod.net.rebuild``. ``ready``: every NIC exists as its kind
    (the VMM can start on it); ``exact``: every device is exactly as recorded."""

    devices: tuple[DeviceOutcome, ...]
    seconds: float

    @property
    def nics(self) -> tuple[DeviceOutcome, ...]:
        return tuple(d for d in self.devices if d.role == "nic")

    @property
    def ready(self) -> bool:
        return all(d.status in PRESENT for d in self.nics)

    @property
    def exact(self) -> bool:
        return all(d.status in EXACT for d in self.devices)

    @property
    def problems(self) -> list[str]:
        """One line per device that is not exactly as recorded, for logs and reclaim results."""
        return [
            f"{d.role} {d.name}: {d.status}" + (f" ({d.reason})" if d.reason else "")
            for d in self.devices
            if d.status not in EXACT
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "exact": self.exact,
            "seconds": self.seconds,
            "devices": [device.to_dict() for device in self.devices],
        }


@dataclass(frozen=True)
class NicWarning:
    """A preflight warning: names the VM and the device, says what will happen and what to do."""

    vm: str
    device: str
    code: str
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {
            "vm": self.vm,
            "device": self.device,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


def warnings(
    vm: str, decls: Sequence[NicDecl], record: NetRecord, managed: Collection[str]
) -> list[NicWarning]:
    """What luod will not be able to rebuild exactly after the kexec, for one VM."""
    found: list[NicWarning] = []
    for name in record.absent:
        found.append(
            NicWarning(
                vm,
                name,
                "nic-absent",
                f"VM {vm} declared {name}, which does not exist",
                "create the device, or correct the VMM's declaration",
            )
        )
    declared = {decl.name: decl for decl in decls}
    for nic in record.nics:
        found += _nic_warnings(vm, nic, declared.get(nic.name), managed)
    return found


def _nic_warnings(
    vm: str, nic: NicRecord, decl: NicDecl | None, managed: Collection[str]
) -> list[NicWarning]:
    def warn(code: str, message: str, hint: str) -> NicWarning:
        return NicWarning(vm, nic.name, code, f"VM {vm}, {nic.name}: {message}", hint)

    found = []
    if not nic.rebuildable:
        found.append(
            warn(
                "nic-unsupported",
                f"{unsupported(nic)}; after the kexec it must come back by other means",
                "the host must bring it back itself before the VM resumes",
            )
        )
    if nic.macvtap is not None and nic.macvtap.lower_mac is None:
        found.append(
            warn(
                "nic-rename-risk",
                f"macvtap on {nic.macvtap.lower}, which has no permanent MAC: if that device "
                "is renamed at boot, luod cannot find it",
                f"give {nic.macvtap.lower} a stable name (a systemd .link file), or use a tap",
            )
        )
    if nic.tap is not None and not nic.tap.persist:
        found.append(
            warn(
                "nic-transient",
                "not persistent (its VMM created it): luod rebuilds it persistent",
                "delete the tap when the VM is destroyed, or create it persistent beforehand",
            )
        )
    if decl is not None and decl.bridge is not None and decl.bridge != nic.master:
        found.append(
            warn(
                "nic-bridge-mismatch",
                f"declared on bridge {decl.bridge}, but is on {nic.master or 'no bridge'}",
                "luod rebuilds what it recorded: correct the declaration or the device",
            )
        )
    if nic.master is not None and nic.master not in managed:
        found.append(
            warn(
                "nic-bridge-unmanaged",
                f"bridge {nic.master} is not managed by luod: {nic.name} can join it after the "
                "kexec only if the host has recreated it by then",
                f"add {nic.master} to luod's managed bridges, or bring it up early in boot",
            )
        )
    return found
