"""One access policy for the VMM socket and REST (issue 13, findings 14 and 15): supplementary
groups admit, only operators (root, access.uids) see other owners' VMs, WATCH and HISTORY,
and the VMM socket is in group luod."""

from __future__ import annotations

import grp
import os
import socket
import stat
from pathlib import Path

import pytest

from luod.core.access import AccessPolicy, Peer
from luod.daemon.daemon import bind
from luod.errors import LuodError
from luod.vmm.server import peer_of

pytestmark = pytest.mark.unit
STAFF = 4242


def test_a_supplementary_group_admits() -> None:
    policy = AccessPolicy(frozenset({0}), frozenset({STAFF}))
    policy.check(Peer(1000, 1000, 1, groups=frozenset({27, STAFF})))
    with pytest.raises(LuodError, match="may not use luod"):
        policy.check(Peer(1000, 1000, 1, groups=frozenset({27})))


def test_operators_are_root_access_uids_and_the_tcp_token() -> None:
    policy = AccessPolicy(frozenset({0, 107}), frozenset({STAFF}))
    assert policy.sees_all(0) and policy.sees_all(107) and policy.sees_all(None)
    assert not policy.sees_all(1000)
    with pytest.raises(LuodError) as refused:
        policy.require_operator(Peer(1000, STAFF, 1), "WATCH")
    assert refused.value.code == "not-allowed"


def test_peer_of_reads_the_supplementary_groups() -> None:
    """A child with supplementary groups connects; SO_PEERGROUPS tells them."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = f"\0luod-groups-{os.getpid()}"
    listener.bind(path)
    listener.listen(1)
    child = os.fork()
    if child == 0:
        try:
            os.setgroups([STAFF, 4343])
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
            conn.recv(1)
        finally:
            os._exit(0)
    try:
        accepted, _ = listener.accept()
        with accepted:
            peer = peer_of(accepted)
            accepted.send(b"x")
    finally:
        os.waitpid(child, 0)
        listener.close()
    assert {STAFF, 4343} <= peer.groups


def test_the_vmm_socket_is_0660_in_its_group_when_it_exists(tmp_path: Path) -> None:
    group = grp.getgrnam("daemon")  # stands in for luod's group (Debian always has it)
    listener = bind(tmp_path / "liveupdate.sock", group.gr_name)
    missing = bind(tmp_path / "other.sock", "no-such-group-luod")
    try:
        st = (tmp_path / "liveupdate.sock").stat()
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == group.gr_gid
        assert (tmp_path / "other.sock").stat().st_gid == os.getegid()
    finally:
        listener.close()
        missing.close()
