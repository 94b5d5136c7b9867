"""Fds of every kind a peer can attach: memfds (plain, empty, sealed, read-only, sparse), pipes,
sockets, O_PATH, /dev/null, a directory, a regular file, an unlinked shmem file, an eventfd, an
epoll fd, and a LUO session fd from a simulator of the fuzzer's own."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import select
import socket
from pathlib import Path
from typing import Final

from luod.kernel import Backend, OwnedFd, open_backend
from tests.fuzz.draw import Draw, pick

KINDS: Final = (
    "memfd",
    "memfd-empty",
    "memfd-sealed",
    "memfd-readonly",
    "memfd-sparse",
    "pipe",
    "socket",
    "o-path",
    "dev-null",
    "directory",
    "regular-file",
    "shm-file",
    "eventfd",
    "epoll",
    "session",
)
SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


class FdMaker:
    """Makes fresh fds, each owned by the caller; ``scratch`` holds its files and simulator."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self._file = scratch / "regular"
        self._file.write_bytes(b"not guest memory\n")
        self._backend: Backend | None = None
        self._names = itertools.count()

    def draw(self, draw: Draw, count: int, preserving: bool) -> list[OwnedFd]:
        """``count`` fds; mostly memfds when they go with a PRESERVE."""
        kinds = [
            "memfd" if preserving and draw.below(4) else pick(draw, KINDS) for _ in range(count)
        ]
        return [self.make(kind) for kind in kinds]

    def make(self, kind: str) -> OwnedFd:
        return OwnedFd(getattr(self, "_" + kind.replace("-", "_"))())

    def _memfd(self, size: int = 4096, flags: int = 0) -> int:
        fd = os.memfd_create("fuzz", os.MFD_CLOEXEC | flags)
        os.ftruncate(fd, size)
        if size:
            os.pwrite(fd, b"guest", 0)
        return fd

    def _memfd_empty(self) -> int:
        return self._memfd(0)

    def _memfd_sealed(self) -> int:
        fd = self._memfd(4096, os.MFD_ALLOW_SEALING)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        return fd

    def _memfd_readonly(self) -> int:
        fd = self._memfd()
        try:
            return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(fd)

    def _memfd_sparse(self) -> int:
        return self._memfd(256 << 20)

    def _pipe(self) -> int:
        read, write = os.pipe2(os.O_CLOEXEC)
        os.close(write)
        return read

    def _socket(self) -> int:
        one, two = socket.socketpair()
        two.close()
        return one.detach()

    def _o_path(self) -> int:
        return os.open(self._file, os.O_PATH | os.O_CLOEXEC)

    def _dev_null(self) -> int:
        return os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)

    def _directory(self) -> int:
        return os.open(self.scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _regular_file(self) -> int:
        return os.open(self._file, os.O_RDWR | os.O_CLOEXEC)

    def _shm_file(self) -> int:
        path = Path("/dev/shm") / f"luod-fuzz-{os.getpid()}-{next(self._names)}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.unlink(path)  # unlinked shmem: the one non-memfd the kernel would preserve
        os.ftruncate(fd, 4096)
        return fd

    def _eventfd(self) -> int:
        return os.eventfd(0, os.EFD_CLOEXEC)

    def _epoll(self) -> int:
        poll = select.epoll()
        try:
            return os.dup(poll.fileno())
        finally:
            poll.close()

    def _session(self) -> int:
        """A LUO session of a simulator of the fuzzer's own (the simulator's session fds are
        pipes that it watches, docs/kernel.md §10.1)."""
        if self._backend is None:
            self._backend = open_backend(self.scratch / "sim")
        session = self._backend.device.create_session(f"fuzz.{next(self._names)}")
        return session.detach().detach()

    def close(self) -> None:
        close = getattr(self._backend and self._backend.platform, "close", None)
        with contextlib.suppress(Exception):
            if close is not None:
                close()
