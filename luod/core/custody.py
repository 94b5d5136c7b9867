"""Custody: every session fd luod holds is also held by something that outlives luod.

Closing the last reference to an outgoing session unpreserves it (guest RAM lost); closing a
retrieved one destroys its unretrieved files. So luod deposits a duplicate of each session fd
with a custodian, and a luod restarted after ``kill -9`` recovers them all
(docs/architecture.md §6):

- ``SystemdFdStore``: systemd's fd store (``FDSTORE=1``), handed back through ``LISTEN_FDS``;
  the only custodian that also carries sessions through ``systemctl kexec``.
- ``KeeperCustody``: a small keeper process (``luod.core.keeper``), when not under systemd.
- ``MemoryCustody``: in-process only, for tests and ``--simulate``.

Names follow ``luod.core.fdname`` (systemd's FDNAME rule) for every kind alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Protocol

from luod.core import sdnotify
from luod.core.fdname import check_name
from luod.core.keeper_client import KeeperCustody
from luod.errors import LuodError
from luod.kernel.fd import OwnedFd, SupportsFileno

__all__ = [
    "Custody",
    "KeeperCustody",
    "MemoryCustody",
    "SystemdFdStore",
    "available",
    "choose_custody",
]

KINDS: Final = ("auto", "systemd", "keeper", "memory")


class Custody(Protocol):
    @property
    def kind(self) -> str:
        """One of "systemd", "keeper", "memory"."""
        ...

    def deposit(self, name: str, fd: SupportsFileno) -> None:
        """Hold a duplicate of ``fd`` (the caller keeps ``fd``); replaces an entry ``name``.

        ``fd`` is an OwnedFd or anything with ``fileno()`` (a ``Session``); ValueError for a
        name systemd would refuse (``luod.core.fdname``).
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


class MemoryCustody:
    """Duplicates in this process: they die with it (tests, ``--simulate``)."""

    kind: Final = "memory"

    def __init__(self) -> None:
        self._held: dict[str, OwnedFd] | None = {}

    def deposit(self, name: str, fd: SupportsFileno) -> None:
        self._table()  # closed: say so before making a duplicate nobody would own
        self.adopt(check_name(name), _dup(fd))

    def adopt(self, name: str, fd: OwnedFd) -> None:
        """Take ``fd`` itself (no duplicate); an older entry of that name is closed."""
        held = self._table()
        old = held.pop(name, None)
        held[name] = fd
        if old is not None:
            old.close()

    def withdraw(self, name: str) -> None:
        fd = self._table().pop(name, None)
        if fd is not None:
            fd.close()

    def recover(self) -> dict[str, OwnedFd]:
        recovered: dict[str, OwnedFd] = {}
        try:
            for name, fd in self._table().items():
                recovered[name] = fd.dup()
        except BaseException:
            for dup in recovered.values():
                dup.close()
            raise
        return recovered

    def close(self) -> None:
        """Close every copy: in-process custody has nothing that outlives it."""
        held, self._held = self._held, None
        for fd in (held or {}).values():
            fd.close()

    def __contains__(self, name: object) -> bool:
        return name in self._table()

    def __len__(self) -> int:
        return len(self._table())

    def _table(self) -> dict[str, OwnedFd]:
        if self._held is None:
            raise LuodError("custody-closed", f"{self.kind} custody is closed")
        return self._held


def available() -> bool:
    """Under systemd with an fd store: ``$NOTIFY_SOCKET`` set and ``$FDSTORE`` > 0."""
    try:
        return sdnotify.notify_address() is not None and sdnotify.fdstore_max() > 0
    except ValueError:
        return False


class SystemdFdStore:
    """systemd's fd store of luod's unit (``FileDescriptorStoreMax=``).

    Sends ``FDSTORE=1`` / ``FDSTOREREMOVE=1`` datagrams. systemd cannot be asked what it holds,
    so a local duplicate of every entry (the fds inherited through ``LISTEN_FDS`` at start, plus
    later deposits) answers ``recover()``; those local copies die with luod, systemd's do not.
    """

    kind: Final = "systemd"

    def __init__(self) -> None:
        if sdnotify.notify_address() is None:
            raise LuodError(
                "custody-unavailable",
                "NOTIFY_SOCKET is not set: luod was not started by systemd",
                hint="run luod as a systemd service, or choose the keeper custody",
            )
        self._max = sdnotify.fdstore_max()
        if self._max <= 0:
            raise LuodError(
                "custody-unavailable",
                "FDSTORE is not set: luod's unit has no fd store",
                hint="set FileDescriptorStoreMax= (and FileDescriptorStorePreserve=yes) in "
                "luod.service; systemd older than 254 does not export $FDSTORE",
            )
        self._mirror = MemoryCustody()
        self._adopt_inherited()

    def deposit(self, name: str, fd: SupportsFileno) -> None:
        check_name(name)
        if name not in self._mirror and len(self._mirror) >= self._max:
            raise LuodError(
                "custody-full",
                f"systemd's fd store holds {self._max} fds, its maximum: cannot keep {name}",
                hint="raise FileDescriptorStoreMax= in luod.service",
            )
        copy = _dup(fd)  # before telling systemd, so that recover() cannot miss an entry
        try:
            if name in self._mirror:
                # systemd files a second fd of the same name next to the first: remove, then
                # store. The caller still holds ``fd`` during the microseconds in between.
                self._notify(f"FDSTOREREMOVE=1\nFDNAME={name}", None, name)
                self._mirror.withdraw(name)
            # FDPOLL=0: systemd drops a stored fd that reports POLLHUP/POLLERR; a session fd
            # must leave the store only when luod says so.
            self._notify(f"FDSTORE=1\nFDNAME={name}\nFDPOLL=0", fd, name)
        except BaseException:
            copy.close()
            raise
        self._mirror.adopt(name, copy)

    def withdraw(self, name: str) -> None:
        # Sent even for names we do not know: removing what is absent is a no-op for systemd,
        # and it clears an entry a crashed luod may have stored.
        self._notify(f"FDSTOREREMOVE=1\nFDNAME={check_name(name)}", None, name)
        self._mirror.withdraw(name)

    def recover(self) -> dict[str, OwnedFd]:
        return self._mirror.recover()

    def close(self) -> None:
        """Close the local copies; systemd's fd store keeps its own."""
        self._mirror.close()

    def _adopt_inherited(self) -> None:
        for name, fd in sdnotify.listen_fds():
            if fd.closed or sdnotify.is_socket(fd):
                continue  # taken already, or a socket-activation socket (not ours)
            # A name stored twice (only by hand) keeps the last; FDSTOREREMOVE drops both.
            self._mirror.adopt(name, OwnedFd(fd.detach()))

    def _notify(self, state: str, fd: SupportsFileno | None, name: str) -> None:
        try:
            sdnotify.notify(state, [fd] if fd is not None else [])
        except OSError as exc:
            verb = state.split("=", 1)[0]
            raise LuodError(
                "custody-unavailable",
                f"could not send {verb} for {name} to systemd: {exc}",
                hint="is $NOTIFY_SOCKET still systemd's (NotifyAccess=main, same pid)?",
                errno=exc.errno,
            ) from exc


def _dup(fd: SupportsFileno) -> OwnedFd:
    return OwnedFd(os.dup(fd.fileno()))  # close-on-exec, like every fd luod opens


def choose_custody(runtime_dir: Path, prefer: str = "auto") -> Custody:
    """systemd's fd store when available, else a keeper at ``runtime_dir/keeper.sock``.

    ``memory`` only when asked for: it loses everything with the process.
    """
    if prefer not in KINDS:
        raise ValueError(f"unknown custody {prefer!r}: one of {', '.join(KINDS)}")
    if prefer == "memory":
        return MemoryCustody()
    if prefer == "systemd" or (prefer == "auto" and available()):
        return SystemdFdStore()
    return KeeperCustody(Path(runtime_dir) / "keeper.sock")
