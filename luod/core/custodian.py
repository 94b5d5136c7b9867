"""What luod asks of whoever holds a second copy of every session fd (the port; the
implementations are in luod.custody: systemd's fd store, the keeper, memory for tests)."""

from __future__ import annotations

from typing import Protocol

from luod.kernel import OwnedFd, SupportsFileno


class Custody(Protocol):
    """Who else holds every session fd luod holds, so that a luod that dies loses nothing
    (implementations: luod.custody). Every method may be called from any thread: the event
    loop deposits and withdraws VMs while a qualification's canaries are preserved and verified
    in a worker thread."""

    @property
    def kind(self) -> str:
        """One of "systemd", "keeper", "memory"."""
        ...

    def deposit(self, name: str, fd: SupportsFileno) -> None:
        """Hold a duplicate of ``fd`` (the caller keeps ``fd``); replaces an entry ``name``.

        ``fd`` is an OwnedFd or anything with ``fileno()`` (a ``Session``); ValueError for a
        name systemd would refuse (``luod.custody.fdname``).
        """
        ...

    def withdraw(self, name: str) -> None:
        """Forget ``name`` and close custody's copy (the session ended); unknown: no-op."""
        ...

    def recover(self) -> dict[str, OwnedFd]:
        """Every fd held, by name, as new duplicates owned by the caller."""
        ...

    def close(self) -> None:
        """Release local resources; fds held outside this process stay held."""
        ...

    def check(self) -> None:
        """Raise LuodError ``custody-unavailable`` when the custodian is gone."""
        ...

    def renew(self) -> None:
        """After a loss: a custodian again (a new keeper), empty; ``custody-unavailable`` when
        none can be had."""
        ...
