"""SystemdFdStore: session fds held in systemd's fd store of luod's unit (``FDSTORE=1``).

Handed back through ``LISTEN_FDS`` when luod starts again; the only custodian that also carries
sessions through ``systemctl kexec`` (``FileDescriptorStorePreserve=yes``, systemd >= 261).
"""

from __future__ import annotations

import threading
from typing import Final

from luod.custody import sdnotify
from luod.custody.fdname import check_name
from luod.custody.memory import MemoryCustody, dup_fd
from luod.errors import LuodError
from luod.kernel.fd import OwnedFd, SupportsFileno


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
    One lock makes each deposit and withdraw whole: a deposit of a held name is a remove, then
    a store, and two threads interleaving them would leave systemd two fds of one name.
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
        self._lock = threading.Lock()
        self._adopt_inherited()

    def deposit(self, name: str, fd: SupportsFileno) -> None:
        check_name(name)
        with self._lock:
            self._deposit(name, fd)

    def _deposit(self, name: str, fd: SupportsFileno) -> None:
        if name not in self._mirror and len(self._mirror) >= self._max:
            raise LuodError(
                "custody-full",
                f"systemd's fd store holds {self._max} fds, its maximum: cannot keep {name}",
                hint="raise FileDescriptorStoreMax= in luod.service",
            )
        copy = dup_fd(fd)  # before telling systemd, so that recover() cannot miss an entry
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
        with self._lock:
            self._notify(f"FDSTOREREMOVE=1\nFDNAME={check_name(name)}", None, name)
            self._mirror.withdraw(name)

    def recover(self) -> dict[str, OwnedFd]:
        return self._mirror.recover()

    def check(self) -> None:
        """systemd is there while luod runs under it."""

    def renew(self) -> None:
        """Nothing to start: systemd's fd store is lost only with the unit."""

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
