"""Who may talk to luod, and who owns a VM (SO_PEERCRED identity, config allow-lists)."""

from __future__ import annotations

import grp
from dataclasses import dataclass, field

from luod.core.model import Owner, VmRecord
from luod.errors import LuodError


@dataclass(frozen=True)
class Peer:
    uid: int
    gid: int
    pid: int
    cgroup: str | None = None

    def as_owner(self) -> Owner:
        return Owner(self.uid, self.gid, self.pid, self.cgroup)


@dataclass(frozen=True)
class AccessPolicy:
    uids: frozenset[int] = frozenset({0})
    gids: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def default(cls) -> AccessPolicy:
        """Root, and members of group ``luod`` when it exists."""
        try:
            gids = frozenset({grp.getgrnam("luod").gr_gid})
        except KeyError:
            gids = frozenset()
        return cls(frozenset({0}), gids)

    def check(self, peer: Peer) -> None:
        if peer.uid in self.uids or peer.gid in self.gids:
            return
        raise LuodError(
            "not-allowed",
            f"uid {peer.uid} gid {peer.gid} may not use luod",
            "run the VMM as root or in group 'luod', or add its uid/gid to luod's config",
        )


def check_owner(vm: VmRecord, peer: Peer) -> None:
    if vm.owner.uid != peer.uid:
        raise LuodError(
            "not-owner",
            f"VM {vm.id!r} belongs to uid {vm.owner.uid}, not {peer.uid}",
            "a VM id is bound to the uid that registered it first",
        )
