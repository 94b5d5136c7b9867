"""What luod knows about each VM: owner, mode, session name, and its files (name ↔ token ↔ kind).

Plain data, JSON-serialisable, shared by the registry, the manifest and the protocol replies.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from luod.errors import LuodError
from luod.values import Value

if TYPE_CHECKING:  # luod.core.nic is imported only for a VM that has NICs (see net_fields)
    from luod.core.nic import NetRecord, NicDecl

SESSION_PREFIX: Final = "luod."
STATE_SESSION: Final = "luod"
MANIFEST_TOKEN: Final = 0
HANDOFF_JOURNAL_TOKEN: Final = 1
"""Session ``luod``: the changes after the snapshot at token 0 (luod.core.manifest)."""
VM_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,57}")
FILE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FILE_KINDS: Final = ("memfd", "vfio", "iommufd", "guest_memfd")
"""What a VMM may name a file's kind; only memfds have a LUO handler today (the kernel says
which, with ENOENT, at preserve time)."""


def session_name(vm_id: str) -> str:
    """LUO session of a VM. Not ``luod:<id>``: systemd refuses ':' in FDNAME, and the fd-store
    name is the session name (docs/architecture.md §3)."""
    return SESSION_PREFIX + vm_id


class Mode(StrEnum):
    HANDOVER = "handover"
    DELEGATION = "delegation"


class VmState(StrEnum):
    REGISTERED = "registered"  # session created, nothing preserved yet
    PRESERVED = "preserved"  # handover: files preserved; delegation: READY received
    INCOMING = "incoming"  # after the kexec: session retrieved, waiting for the owner
    RECLAIMED = "reclaimed"  # every file (or the session fd) handed back
    LOST = "lost"  # its session did not survive (reported, never silent)


class _FileSpec(NamedTuple):
    name: str
    kind: str = "memfd"


class FileSpec(Value, _FileSpec):
    """A file a VMM asks luod to preserve: its name within the VM, and its kind."""

    __slots__ = ()


class _Owner(NamedTuple):
    uid: int
    gid: int
    pid: int
    cgroup: str | None = None


class Owner(Value, _Owner):
    """Who registered a VM (its VMM's credentials); a VM gets a new Owner, never a changed one."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """As ``dataclasses.asdict`` would, without its deep copy (10x slower; once per VM in
        every manifest snapshot)."""
        return {"uid": self.uid, "gid": self.gid, "pid": self.pid, "cgroup": self.cgroup}


@dataclass
class FileRecord:
    name: str
    token: int
    kind: str
    size: int
    reclaimed: bool = False
    exec_sealed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "token": self.token,
            "kind": self.kind,
            "size": self.size,
            "reclaimed": self.reclaimed,
            "exec_sealed": self.exec_sealed,
        }


@dataclass
class VmRecord:
    id: str
    owner: Owner
    mode: Mode
    state: VmState = VmState.REGISTERED
    files: dict[str, FileRecord] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    note: str = ""
    rejected: dict[str, str] = field(default_factory=dict)  # file name -> why luod refused it
    nics: tuple[NicDecl, ...] = ()  # the network devices its VMM declared
    net: NetRecord | None = None  # what they looked like at prepare (crosses the kexec)
    net_report: dict[str, Any] | None = None  # after the kexec: RebuildReport.to_dict()

    @property
    def session(self) -> str:
        return session_name(self.id)

    def next_token(self) -> int:
        """Tokens are 1, 2, 3... in preservation order; LUO cannot unpreserve a single file,
        so the count of files is the last token."""
        return MANIFEST_TOKEN + len(self.files) + 1

    def touch(self, state: VmState | None = None, note: str | None = None) -> None:
        if state is not None:
            self.state = state
        if note is not None:
            self.note = note
        self.updated = time.time()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner.to_dict(),
            "mode": str(self.mode),
            "state": str(self.state),
            "session": self.session,
            "files": [f.to_dict() for f in self.files.values()],
            "created": self.created,
            "updated": self.updated,
            "note": self.note,
            "rejected": dict(self.rejected),
            "nics": [nic.to_dict() for nic in self.nics],
            "net": None if self.net is None else self.net.to_dict(),
            "net_report": self.net_report,
        }


def net_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The network record of a VM, read from a manifest: one that cannot be read is a network
    failure reported for that VM (its rebuild result), never a manifest refused, which would
    hold its memory back."""
    report = data.get("net_report")
    if not data.get("nics") and data.get("net") is None:  # no NICs: luod.core.nic not imported
        return {"nics": (), "net": None, "net_report": report if isinstance(report, dict) else None}
    from luod.core.nic import NetRecord, NicDecl

    try:
        nics = tuple(NicDecl.from_dict(nic) for nic in data.get("nics", []))
        net = None if data.get("net") is None else NetRecord.from_dict(data["net"])
    except LuodError as exc:
        failure = f"its network record is unreadable ({exc}): nothing rebuilt"
        return {"nics": (), "net": None, "net_report": unreadable_net(failure)}
    return {"nics": nics, "net": net, "net_report": report if isinstance(report, dict) else None}


def unreadable_net(reason: str) -> dict[str, Any]:
    """A rebuild result for a VM whose NICs luod could not even try to rebuild."""
    return {"ready": False, "exact": False, "seconds": 0.0, "devices": [], "error": reason}
