"""Which custodian holds luod's session fds (docs/architecture.md §6): every session fd luod
holds is also held by something that outlives luod, so a luod restarted after ``kill -9``
recovers them all.

- systemd's fd store (luod.custody.fdstore), when luod runs as a service with one;
- else the keeper process (luod.custody.keeper_client: ``python -m luod.custody.keeper``);
- in-process copies (luod.custody.memory) only when asked for: tests and ``--simulate``.

Names follow luod.custody.fdname (systemd's FDNAME rule) for every kind alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from luod.core.custodian import Custody
from luod.custody.fdstore import SystemdFdStore, available
from luod.custody.memory import MemoryCustody

KINDS: Final = ("auto", "systemd", "keeper", "memory")


def choose_custody(runtime_dir: Path, prefer: str = "auto") -> Custody:
    """systemd's fd store when available, else a keeper at ``runtime_dir/keeper.sock``.

    ``memory`` only when asked for: it loses everything with the process.
    """
    if prefer not in KINDS:
        raise ValueError(f"unknown custody {prefer!r}: one of {', '.join(KINDS)}")
    if prefer == "memory":
        return MemoryCustody()
    if prefer == "systemd" or (prefer == "auto" and available()):
        return SystemdFdStore()
    # here: the keeper's wire format is for hosts without systemd, not every start (issue 17)
    from luod.custody.keeper_client import KeeperCustody

    return KeeperCustody(Path(runtime_dir) / "keeper.sock")
