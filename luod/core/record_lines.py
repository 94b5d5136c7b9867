"""An update record's change lines: what changed in the record since it was written, as one
JSON object, ``{"phase": transition, "steps": [[vm, name, stamp], ...]}`` (``phase`` only when a
transition happened).

Two places keep a record as written once plus such lines, so that what changes while every VM
is paused costs a line, not the whole record (issue 17): the running record on disk
(luod.core.running), and the handoff's kexec line, which carries the record as it was staged
before the freeze with the lines appended since (luod.core.manifest). Both read them back with
``apply``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from luod.core import jsontext

if TYPE_CHECKING:  # luod.core.kexec_journal reads lines before luod's imports (luod.start)
    from luod.core.clock import Stamp


def encode(phase: dict[str, Any] | None, steps: Sequence[tuple[str, str, Stamp]]) -> bytes:
    """The line of a transition (``Transition.to_dict()``, or None) and the VMs' steps (vm,
    name, when), in the manifest's JSON form (``jsontext.dumps``), without its newline."""
    line: dict[str, Any] = {"steps": [[vm, name, at.to_dict()] for vm, name, at in steps]}
    if phase is not None:
        line["phase"] = phase
    return jsontext.dumps(line).encode()


def apply(vms: dict[str, Any], phases: list[Any], line: object) -> None:
    """One line, parsed, applied to a record's ``vms`` and ``phases``. A line that is not one
    (a torn write, a hostile file) changes nothing; a step or a phase of the wrong type is
    skipped. What the stamps hold is the reader's to check (luod.core.manifest_check)."""
    if not isinstance(line, dict):
        return
    try:
        checked = [(vm, name, at) for vm, name, at in line["steps"]]
    except (KeyError, TypeError, ValueError):
        return
    phase = line.get("phase")
    for vm, name, at in checked:
        if isinstance(vm, str) and isinstance(name, str) and isinstance(at, dict):
            vms.setdefault(vm, {})[name] = at
    if isinstance(phase, dict):
        phases.append(phase)


def apply_all(record: dict[str, Any], lines: Iterable[object]) -> None:
    """``lines`` applied to a record's dict (``UpdateRecord.to_dict()``'s form, as read back);
    one whose ``vms`` or ``phases`` has the wrong type is left for the reader's checks."""
    vms, phases = record.setdefault("vms", {}), record.setdefault("phases", [])
    if isinstance(vms, dict) and isinstance(phases, list):
        for line in lines:
            apply(vms, phases, line)
