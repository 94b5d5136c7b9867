"""The limits luod enforces on what its clients may make it hold (issue 13 §3).

Each is documented, with its default, its luod.toml key and its error code, in docs/limits.md.
The defaults stay within what was measured on the real kernel (docs/kernel.md §9: 2000
sessions and 500 files in one session cross a kexec) and within one reply frame.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    connections_per_uid: int = 64
    """Open VMM-socket connections of one uid; one more is answered ``too-many-connections``
    and closed."""
    vms_per_uid: int = 1024
    """VMs (LUO sessions) one uid may register; one more is ``too-many-vms``."""
    sessions: int = 2000
    """VMs on the host, all uids together (each is a LUO session and two fds: luod's and
    custody's); one more is ``too-many-vms``."""
    files_per_vm: int = 256
    """Files preserved in one VM; a PRESERVE that would pass it is ``too-many-files`` and
    preserves nothing."""
