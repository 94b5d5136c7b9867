"""OwnedFd: the one owner of a file descriptor number.

An fd number that leaves the kernel layer is always wrapped. The owner can be closed twice
safely, sets its number to -1 *before* closing (so a failing close never leaves a dangling
number behind), and gives the number away only through an explicit ``detach()``.

There is deliberately no ``__del__``: an fd that owns a LUO session must never be closed by the
garbage collector, because closing the last reference to an outgoing session unpreserves it
(docs/kernel.md §5.1). A forgotten fd is a leak that tests catch; an unexpected close loses guest
RAM.
"""

from __future__ import annotations

import os
from typing import Protocol


class SupportsFileno(Protocol):
    def fileno(self) -> int: ...


class OwnedFd:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        if fd < 0:
            raise ValueError(f"OwnedFd needs an open fd, got {fd}")
        self._fd = fd

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on a closed or detached fd")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def detach(self) -> int:
        """Give up ownership and return the raw number; the caller must close it."""
        fd = self.fileno()
        self._fd = -1
        return fd

    def dup(self) -> OwnedFd:
        """A new owner of a duplicate (same open file description, close-on-exec)."""
        return OwnedFd(os.dup(self.fileno()))

    def __enter__(self) -> OwnedFd:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OwnedFd({self._fd})" if self._fd >= 0 else "OwnedFd(closed)"
