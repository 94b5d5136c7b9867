"""Which VMM connection speaks for each VM: the one that last registered, preserved, reclaimed
or subscribed it. The update pushes its events there; a VM without one has nothing to pause."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from luod.core.access import Peer
from luod.vmm import codec


class VmmConnection(Protocol):
    """What luod needs of a connection (luod.vmm.server.Connection; tests use stand-ins)."""

    peer: Peer
    subscribed: set[str]
    capabilities: frozenset[str]  # granted in HELLO (luod.core.dialect)
    closed: bool

    def push(self, message: codec.Outgoing) -> None: ...


class VmmConnections:
    def __init__(self) -> None:
        self._by_vm: dict[str, VmmConnection] = {}

    def track(self, vm_id: str, conn: VmmConnection) -> None:
        self._by_vm[vm_id] = conn
        conn.subscribed.add(vm_id)

    def of(self, vm_id: str) -> VmmConnection | None:
        return self._by_vm.get(vm_id)

    def forget(self, vm_id: str) -> None:
        self._by_vm.pop(vm_id, None)

    def gone(self, conn: VmmConnection) -> list[str]:
        """``conn`` closed: the VMs it spoke for, which now have no connection."""
        vms = [vm for vm, c in self._by_vm.items() if c is conn]
        for vm in vms:
            del self._by_vm[vm]
        return vms

    def connected(self) -> list[str]:
        """VMs whose connection is open."""
        return [vm for vm, conn in self._by_vm.items() if not conn.closed]

    def granted(self) -> dict[str, frozenset[str]]:
        """Each connected VM's capabilities, as its VMM's HELLO was granted them."""
        return {vm: conn.capabilities for vm, conn in self._by_vm.items() if not conn.closed}

    def __iter__(self) -> Iterator[tuple[str, VmmConnection]]:
        return iter(list(self._by_vm.items()))
