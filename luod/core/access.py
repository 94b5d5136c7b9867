"""Who may talk to luod, what they may see, and who owns a VM (SO_PEERCRED identity, config
allow-lists). One policy for the VMM socket and the REST API (docs/operations.md §9):

- admitted: uid in ``access.uids``, or the primary or a supplementary group in
  ``access.groups`` (the VMM socket checks it per request; the REST socket's mode and group
  admit the same people);
- operators (root and ``access.uids``) see every VM, the update events and the history;
  everyone else admitted sees only the VMs of their own uid (LIST, ``GET /v1/vms``), and is
  refused WATCH, HISTORY, ``/v1/events``, ``/v1/history`` and ``/metrics``;
- starting, aborting and preflighting an update is root's (or the TCP token's) alone;
- a VM is its registering uid's: nobody else may touch it (``not-owner``)."""

from __future__ import annotations

import grp
from typing import NamedTuple

from luod.core.model import Owner, VmRecord
from luod.errors import LuodError
from luod.values import Value


class _Peer(NamedTuple):
    uid: int
    gid: int
    pid: int
    cgroup: str | None = None
    groups: frozenset[int] = frozenset()  # supplementary groups (SO_PEERGROUPS)


class Peer(Value, _Peer):
    __slots__ = ()

    def as_owner(self) -> Owner:
        return Owner(self.uid, self.gid, self.pid, self.cgroup)


class _AccessPolicy(NamedTuple):
    uids: frozenset[int] = frozenset({0})
    gids: frozenset[int] = frozenset()


class AccessPolicy(Value, _AccessPolicy):
    __slots__ = ()

    @classmethod
    def default(cls) -> AccessPolicy:
        """Root, and members of group ``luod`` when it exists."""
        try:
            gids = frozenset({grp.getgrnam("luod").gr_gid})
        except KeyError:
            gids = frozenset()
        return cls(frozenset({0}), gids)

    def check(self, peer: Peer) -> None:
        if peer.uid in self.uids or peer.gid in self.gids or peer.groups & self.gids:
            return
        raise LuodError(
            "not-allowed",
            f"uid {peer.uid} gid {peer.gid} may not use luod",
            "run the VMM as root or in group 'luod', or add its uid/gid to luod's config",
        )

    def sees_all(self, uid: int | None) -> bool:
        """An operator: root, a uid in ``access.uids``, or None (the REST token over TCP)."""
        return uid is None or uid == 0 or uid in self.uids

    def require_operator(self, peer: Peer, what: str) -> None:
        if not self.sees_all(peer.uid):
            raise LuodError(
                "not-allowed",
                f"{what} shows every owner's VMs: uid {peer.uid} is not in access.uids",
                "ask the host operator, or add the uid to access.uids in luod.toml",
            )


def check_owner(vm: VmRecord, peer: Peer) -> None:
    if vm.owner.uid != peer.uid:
        raise LuodError(
            "not-owner",
            f"VM {vm.id!r} belongs to uid {vm.owner.uid}, not {peer.uid}",
            "a VM id is bound to the uid that registered it first",
        )
