"""Which VMM connection speaks for each VM: the one that last registered, preserved, reclaimed
or subscribed it. The update pushes its events there; a VM without one has nothing to pause.

It also knows each VM's liveness: connected, or disconnected since when (its VMM closed the
connection, or it came through a kexec or a luod restart and no VMM spoke for it since: then
since this luod started)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from luod.core.access import Peer
from luod.values import Value
from luod.vmm import codec


class VmmConnection(Protocol):
    """What luod needs of a connection (luod.vmm.server.Connection; tests use stand-ins)."""

    peer: Peer
    subscribed: set[str]
    capabilities: frozenset[str]  # granted in HELLO (luod.core.dialect)
    closed: bool

    def push(self, message: codec.Outgoing) -> None: ...


class _Liveness(NamedTuple):
    connected: bool
    since: float | None  # realtime it disconnected (None while connected)


class Liveness(Value, _Liveness):
    __slots__ = ()


class VmmConnections:
    def __init__(self, started: float | None = None) -> None:
        self._by_vm: dict[str, VmmConnection] = {}
        self._gone_at: dict[str, float] = {}
        self._started = time.time() if started is None else started

    def track(self, vm_id: str, conn: VmmConnection) -> None:
        self._by_vm[vm_id] = conn
        self._gone_at.pop(vm_id, None)
        conn.subscribed.add(vm_id)

    def liveness(self, vm_id: str) -> Liveness:
        conn = self._by_vm.get(vm_id)
        if conn is not None and not conn.closed:
            return Liveness(True, None)
        return Liveness(False, self._gone_at.get(vm_id, self._started))

    def of(self, vm_id: str) -> VmmConnection | None:
        return self._by_vm.get(vm_id)

    def forget(self, vm_id: str) -> None:
        """The VM is done with (DONE, or dropped): nothing to track any more."""
        self._by_vm.pop(vm_id, None)
        self._gone_at.pop(vm_id, None)

    def gone(self, conn: VmmConnection) -> list[str]:
        """``conn`` closed: the VMs it spoke for, which now have no connection. Looked up by
        the connection's own VMs (``track`` adds each), not over every VM's: at each of 1000
        VMMs' hang-ups the scan cost 23 µs on a host, O(VMs²) over a reclaim."""
        vms = sorted(vm for vm in conn.subscribed if self._by_vm.get(vm) is conn)
        now = time.time()
        for vm in vms:
            del self._by_vm[vm]
            self._gone_at[vm] = now
        return vms

    def connected(self) -> list[str]:
        """VMs whose connection is open."""
        return [vm for vm, conn in self._by_vm.items() if not conn.closed]

    def granted(self) -> dict[str, frozenset[str]]:
        """Each connected VM's capabilities, as its VMM's HELLO was granted them."""
        return {vm: conn.capabilities for vm, conn in self._by_vm.items() if not conn.closed}

    def apart(self, own_cgroup: str | None) -> list[str]:
        """Connected VMs whose VMM runs in a known cgroup other than ``own_cgroup`` (luod's):
        on the real kernel their RECLAIMs enter that cgroup (luod.kernel.charged)."""
        return [
            vm
            for vm, conn in self._by_vm.items()
            if not conn.closed and conn.peer.cgroup not in (None, own_cgroup)
        ]

    def __iter__(self) -> Iterator[tuple[str, VmmConnection]]:
        return iter(list(self._by_vm.items()))
