"""Where each VM's blackout went, as luod's REST API tells it (``blackout_parts`` of an update
record, luod.core.blackout_split): the same parts as ``make bench``'s blackout budget
(bench/NOTES.md), for an operator's real update. ``kexec*`` is the one part measured across two
kernels' clocks: ±1 s (docs/operations.md §4).
"""

from __future__ import annotations

from typing import Any

STEPS = (
    ("wait", "the other VMs' READY, then luod's last bookkeeping before the kexec"),
    ("kexec*", "until the new kernel started (systemctl kexec: systemd's shutdown too); ±1 s"),
    ("boot", "the new kernel's boot until luod's process started (init, the units before it)"),
    ("start", "luod's own start-up: its interpreter and imports"),
    ("luod", "luod taking the sessions back"),
    ("reclaim", "until the VM's VMM asked for its files and got them"),
    ("restore", "the VMM's restore, until its DONE"),
)


def parts(record: dict[str, Any], vm: str) -> list[float | None] | None:
    """Seconds of each of STEPS for ``vm``, in order; None when luod did not split its blackout
    (an aborted update, one still reclaiming, a luod older than the split). ``start`` is None
    where luod could not tell its process's start: ``boot`` then runs until luod ran."""
    found = record.get("blackout_parts", {}).get(vm)
    if not isinstance(found, dict):
        return None
    return [found.get(name.rstrip("*")) for name, _ in STEPS]


def rows(record: dict[str, Any], measured: dict[str, float]) -> list[list[str]] | None:
    """One row per measured VM: its id, its blackout, then its parts; None when a VM's parts
    are not all there (the caller then shows the blackouts alone)."""
    out = []
    for vm, total in sorted(measured.items()):
        found = parts(record, vm)
        if found is None:
            return None
        out.append([vm, _seconds(total), *("-" if p is None else _seconds(p) for p in found)])
    return out


def header() -> list[str]:
    return ["VM", "BLACKOUT", *(name.upper() for name, _ in STEPS)]


def legend() -> list[str]:
    return [f"  {name:<9}{meaning}" for name, meaning in STEPS]


def _seconds(value: float) -> str:
    return f"{value:.3f} s"
