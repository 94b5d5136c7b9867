"""The capabilities of luod's dialect of the VMM socket (api/vmm-protocol.md §2a): what a client
lists in HELLO, and luod grants. Apart from luod.core.dialect, whose decisions need luod's model,
so that a VMM's client library names them without importing that model (it starts again right
after every kexec: bench/NOTES.md, Start-up)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Capability(StrEnum):
    FREEZE = "freeze"  # FREEZE events, answered with READY, pause the VM before the kexec
    RESUME = "resume"  # RESUME events after an abort or a failed reboot
    PROGRESS = "progress"  # WATCH, and its PHASE / VM_PROGRESS / UPDATE_END events
    DONE = "done"  # delegation: luod keeps custody after CLAIM until DONE


ALL: Final = frozenset(Capability)
