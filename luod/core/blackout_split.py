"""Where each VM's blackout went: the span from its READY (freeze ack) to its DONE after the
kexec, cut where luod stamped a step of the update. The same parts as ``make bench``'s blackout
budget (bench/NOTES.md); the REST API serves them with each update record, ``/metrics`` counts
them and luoctl shows them (docs/operations.md §4).

Every part is measured within one boot but ``kexec``: it runs from luod's kexec step on the old
kernel's clock to the new kernel's start on the new one's, which the new kernel set from the
hardware clock, to the second. So the parts add up to the blackout exactly, and ``kexec`` and
``boot`` may trade up to a second between them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Final

PARTS: Final = ("wait", "kexec", "boot", "start", "luod", "reclaim", "restore")
"""In order: the other VMs' READY and luod's last bookkeeping before the kexec; until the new
kernel started; its boot until luod's process started; luod's interpreter and imports; luod
taking the sessions back; until the VM's VMM asked for its files and got them; the VMM's restore
until its DONE."""

Parts = dict[str, float | None]


def split(record: Mapping[str, Any]) -> dict[str, Parts]:
    """Per VM of an update record (``UpdateRecord.to_dict()``), its blackout's PARTS in seconds.
    A VM is left out unless luod stamped every step of it (an aborted update, a VM still
    reclaiming); a stamp that is not one (a damaged history line) counts as missing. A record
    without ``luod_exec`` (an older luod, no /proc) has ``boot`` until luod ran and ``start``
    None."""
    events = _mapping(record.get("events"))
    phases = record.get("phases")
    kexec_steps = [
        p.get("at") for p in phases if isinstance(p, Mapping) and p.get("to") == "rebooting"
    ] if isinstance(phases, list) else []  # fmt: skip
    host = [
        kexec_steps[-1] if kexec_steps else None,  # a reboot that failed froze again since
        events.get("kernel_boot"),
        events.get("luod_start"),
        events.get("sessions_retrieved"),
    ]
    found = {}
    for vm, steps in _mapping(record.get("vms")).items():
        vm_steps = _mapping(steps)
        marks = [vm_steps.get("freeze_ack"), *host, vm_steps.get("reclaimed"), vm_steps.get("done")]
        at = [moment for mark in marks if (moment := _realtime(mark)) is not None]
        if len(at) == len(marks):
            found[str(vm)] = _parts(at, _realtime(events.get("luod_exec")))
    return found


def _parts(at: list[float], execed: float | None) -> Parts:
    wait, kexec, boot, luod, reclaim, restore = (b - a for a, b in itertools.pairwise(at))
    start = None
    if execed is not None:  # the boot's part ends at luod's exec
        boot, start = execed - at[2], at[3] - execed
    spans = (wait, kexec, boot, start, luod, reclaim, restore)
    return {
        name: None if span is None else round(span, 6)
        for name, span in zip(PARTS, spans, strict=True)
    }


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _realtime(stamp: object) -> float | None:
    """A stamp's realtime (``Stamp.to_dict()``), or None when it is not a stamp."""
    moment = _mapping(stamp).get("realtime")
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        return None
    return float(moment)
