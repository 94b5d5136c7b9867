"""The limits luod enforces on what its clients may make it hold (issue 13 §3).

Each is documented, with its default, its luod.toml key and its error code, in docs/limits.md.
The defaults stay within what was measured on the real kernel (docs/kernel.md §9: 2000
sessions and 500 files in one session cross a kexec) and within one reply frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from luod.core.model import VmRecord
from luod.errors import LuodError
from luod.values import Value


class _Limits(NamedTuple):
    connections_per_uid: int = 1100
    """Open VMM-socket connections of one uid; one more is answered ``too-many-connections``
    and closed. Above vms_per_uid: a VMM keeps one connection per VM (for FREEZE)."""
    vms_per_uid: int = 1024
    """VMs (LUO sessions) one uid may register; one more is ``too-many-vms``."""
    sessions: int = 2000
    """VMs on the host, all uids together (each is a LUO session and two fds: luod's and
    custody's); one more is ``too-many-vms``."""
    files_per_vm: int = 256
    """Files preserved in one VM; a PRESERVE that would pass it is ``too-many-files`` and
    preserves nothing."""


class Limits(Value, _Limits):
    __slots__ = ()

    def check_room_for_a_vm(self, vms: Iterable[VmRecord], uid: int) -> None:
        """``too-many-vms`` unless one more VM of ``uid`` fits beside ``vms``."""
        owners = [vm.owner.uid for vm in vms]
        if len(owners) >= self.sessions:
            raise LuodError(
                "too-many-vms",
                f"luod holds {len(owners)} VMs, its limit (limits.sessions)",
                "DROP VMs that need no live update, or raise limits.sessions (docs/limits.md)",
            )
        if (owned := owners.count(uid)) >= self.vms_per_uid:
            raise LuodError(
                "too-many-vms",
                f"uid {uid} has {owned} VMs, its limit (limits.vms_per_uid)",
                "DROP VMs that need no live update, or raise limits.vms_per_uid (docs/limits.md)",
            )

    def check_room_for_files(self, vm: VmRecord, count: int) -> None:
        """``too-many-files`` unless ``count`` more files fit in ``vm``."""
        if len(vm.files) + count > self.files_per_vm:
            raise LuodError(
                "too-many-files",
                f"VM {vm.id!r} has {len(vm.files)} files; {count} more would pass its "
                f"limit of {self.files_per_vm} (limits.files_per_vm)",
                "preserve fewer, larger files (one memfd per RAM region), or raise "
                "limits.files_per_vm (docs/limits.md)",
            )
