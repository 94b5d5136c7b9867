"""MemoryCustody: in-process custody, for tests and ``--simulate``."""

from __future__ import annotations

import os
import threading
from typing import Final

from luod.custody.fdname import check_name
from luod.errors import LuodError
from luod.kernel.fd import OwnedFd, SupportsFileno


class MemoryCustody:
    """Duplicates in this process: they die with it (tests, ``--simulate``). One lock around
    the table: a qualification's verify recovers from a worker thread while the event loop
    deposits and withdraws (without it: "dictionary changed size during iteration", or a dup
    of an fd closed under it)."""

    kind: Final = "memory"

    def __init__(self) -> None:
        self._held: dict[str, OwnedFd] | None = {}
        self._lock = threading.Lock()

    def deposit(self, name: str, fd: SupportsFileno) -> None:
        self._table()  # closed: say so before making a duplicate nobody would own
        self.adopt(check_name(name), dup_fd(fd))

    def adopt(self, name: str, fd: OwnedFd) -> None:
        """Take ``fd`` itself (no duplicate); an older entry of that name is closed."""
        with self._lock:
            held = self._table()
            old = held.pop(name, None)
            held[name] = fd
        if old is not None:
            old.close()

    def withdraw(self, name: str) -> None:
        with self._lock:
            fd = self._table().pop(name, None)
            if fd is not None:
                fd.close()

    def recover(self) -> dict[str, OwnedFd]:
        recovered: dict[str, OwnedFd] = {}
        with self._lock:
            try:
                for name, fd in self._table().items():
                    recovered[name] = fd.dup()
            except BaseException:
                for dup in recovered.values():
                    dup.close()
                raise
        return recovered

    def check(self) -> None:
        """In-process: there while luod is."""

    def renew(self) -> None:
        """Nothing to start again: in-process custody is lost only with luod."""

    def close(self) -> None:
        """Close every copy: in-process custody has nothing that outlives it."""
        with self._lock:
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


def dup_fd(fd: SupportsFileno) -> OwnedFd:
    return OwnedFd(os.dup(fd.fileno()))  # close-on-exec, like every fd luod opens
