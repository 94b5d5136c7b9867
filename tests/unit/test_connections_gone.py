"""luod.daemon.connections: a closed connection's VMs are the ones it still speaks for, found
from the connection's own VMs (not a scan of every VM's connection)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from luod.core.access import Peer
from luod.daemon.connections import VmmConnection, VmmConnections
from luod.vmm import codec


@dataclass(eq=False)
class Conn:
    peer: Peer = field(default_factory=lambda: Peer(pid=1, uid=0, gid=0))
    subscribed: set[str] = field(default_factory=set)
    capabilities: frozenset[str] = frozenset()
    closed: bool = False

    def push(self, message: codec.Outgoing) -> None:
        raise AssertionError("nothing is pushed here")


class CountingDict(dict[str, VmmConnection]):
    """Counts the scans of every VM's connection."""

    scans = 0

    def items(self) -> Any:
        CountingDict.scans += 1
        return super().items()


def test_a_closed_connection_gives_the_vms_it_still_speaks_for() -> None:
    connections = VmmConnections(started=0.0)
    first, second = Conn(), Conn()
    for vm in ("vm3", "vm1", "vm2"):
        connections.track(vm, first)
    connections.track("vm2", second)  # vm2 moved: the second connection speaks for it now
    connections.track("vm4", second)
    connections.forget("vm3")  # done with: no connection to lose
    assert connections.gone(first) == ["vm1"]
    assert not connections.liveness("vm1").connected
    assert connections.liveness("vm1").since is not None
    assert connections.liveness("vm2").connected
    assert connections.gone(first) == []  # said once
    assert connections.gone(second) == ["vm2", "vm4"]


def test_a_hang_up_looks_at_its_own_vms_only() -> None:
    connections = VmmConnections(started=0.0)
    connections._by_vm = CountingDict()  # what a scan of every VM would go through
    conns = [Conn() for _ in range(50)]
    for number, conn in enumerate(conns):
        connections.track(f"vm{number}", conn)
    CountingDict.scans = 0
    for number, conn in enumerate(conns):
        assert connections.gone(conn) == [f"vm{number}"]
    assert CountingDict.scans == 0
