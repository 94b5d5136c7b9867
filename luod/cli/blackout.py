"""Where each VM's blackout went, from the stamps luod keeps in an update record: the span from
its READY (freeze ack) to its DONE after the kexec, cut where luod stamped a step. The same
parts as ``make bench``'s blackout budget (bench/NOTES.md), for an operator's real update.

Every part is measured within one boot but ``kexec``: it runs from luod's kexec step on the old
kernel's clock to the new kernel's start on the new one's, which the new kernel set from the
hardware clock, to the second (docs/operations.md §4).
"""

from __future__ import annotations

import itertools
from typing import Any

from luod.cli.moments import epoch

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
    """Seconds of each of STEPS for ``vm``, in order; None unless luod stamped every step (an
    aborted update, one still running, an older record). A record without ``luod_exec`` (an
    older luod, no /proc) has ``boot`` until luod ran and ``start`` None."""
    stamps = record.get("vms", {}).get(vm, {})
    events = record.get("events", {})
    kexec_step = [p["at"] for p in record.get("phases", []) if p.get("to") == "rebooting"]
    marks = [
        stamps.get("freeze_ack"),
        kexec_step[-1] if kexec_step else None,  # a reboot that failed froze again since
        events.get("kernel_boot"),
        events.get("luod_start"),
        events.get("sessions_retrieved"),
        stamps.get("reclaimed"),
        stamps.get("done"),
    ]
    if any(mark is None for mark in marks):
        return None
    at = [epoch(mark) for mark in marks]
    wait, kexec, boot, luod, reclaim, restore = (b - a for a, b in itertools.pairwise(at))
    start = None
    if execed := events.get("luod_exec"):  # the boot's part ends at luod's exec
        boot, start = epoch(execed) - at[2], at[3] - epoch(execed)
    return [wait, kexec, boot, start, luod, reclaim, restore]


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
