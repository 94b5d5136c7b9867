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
from typing import TYPE_CHECKING, Final

from luod.core.custodian import Custody
from luod.custody.fdstore import SystemdFdStore, available
from luod.custody.memory import MemoryCustody
from luod.errors import LuodError

if TYPE_CHECKING:
    from luod.custody.keeper_start import KeeperStart

KINDS: Final = ("auto", "systemd", "keeper", "memory")


def choose_custody(
    runtime_dir: Path, prefer: str = "auto", starting: KeeperStart | None = None
) -> Custody:
    """systemd's fd store when available, else a keeper at ``runtime_dir/keeper.sock``
    (``starting``: its start begun by ``begin_keeper``).

    ``memory`` only when asked for: it loses everything with the process.
    """
    kind = chosen_kind(prefer)
    if kind == "memory":
        return MemoryCustody()
    if kind == "systemd":
        return SystemdFdStore()
    # here: the keeper's wire format is for hosts without systemd, not every start (issue 17)
    from luod.custody.keeper_client import KeeperCustody

    return KeeperCustody(keeper_socket(runtime_dir), starting=starting)


def chosen_kind(prefer: str) -> str:
    """The custodian ``prefer`` (one of KINDS) means here: memory, systemd or keeper."""
    if prefer not in KINDS:
        raise ValueError(f"unknown custody {prefer!r}: one of {', '.join(KINDS)}")
    if prefer == "auto":
        return "systemd" if available() else "keeper"
    return prefer


def begin_keeper(runtime_dir: Path, prefer: str) -> KeeperStart | None:
    """When the custodian will be a keeper, make ``runtime_dir`` (empty after a kexec under a
    bare init; luod's own start makes it too) and begin the keeper's start now (luod.start,
    before luod's imports; ``choose_custody`` awaits it): None otherwise, or when the directory
    or the start fails (connecting later starts it again and reports why). Where a keeper
    already listens (luod restarted without a kexec) the starter says so and exits; that keeper
    is used."""
    if chosen_kind(prefer) != "keeper":
        return None
    from luod.core import statedir
    from luod.custody.keeper_start import KeeperStart

    try:
        statedir.prepare(Path(runtime_dir), statedir.RUNTIME_DIR_MODE)
        return KeeperStart.begin(keeper_socket(runtime_dir))
    except (LuodError, OSError):
        return None


def keeper_socket(runtime_dir: Path) -> Path:
    return Path(runtime_dir) / "keeper.sock"
