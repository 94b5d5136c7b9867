"""The simulator's objects: sessions, preserved files, and the global identity table.

Mirrors docs/kernel.md §10.1. Session fds are the write ends of pipes: the simulator keeps the read
end and learns that the *last* reference anywhere (dup, fork, SCM_RIGHTS) was closed when the
read end reports EPOLLHUP — which is exactly when the kernel would release the session.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from luod.kernel import memfd
from luod.kernel._simdisk import FileRecord
from luod.kernel.fd import OwnedFd

Identity = tuple[int, int]
"""(st_dev, st_ino): what the memfd handler's get_id() compares (the inode)."""


def fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def identity(fd: int) -> Identity:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


@dataclass(slots=True)
class OutgoingFile:
    token: int
    ref: OwnedFd  # the simulator's own reference, like the kernel's fget()
    ident: Identity
    size: int
    seals: int


@dataclass(slots=True)
class IncomingFile:
    record: FileRecord
    data: Path | None
    retrieved: OwnedFd | None = None
    ident: Identity | None = None
    error: int | None = None


@dataclass(slots=True)
class SimSession:
    name: str
    incoming: bool
    reader: OwnedFd  # read end of the session pipe; HUP = last session fd closed
    key: Identity
    outgoing_files: dict[int, OutgoingFile] = field(default_factory=dict)
    incoming_files: dict[int, IncomingFile] = field(default_factory=dict)
    finished: bool = False


def restore_memfd(record: FileRecord, data: Path | None) -> OwnedFd:
    """What memfd_luo's retrieve builds (docs/kernel.md §6.4): a fresh memfd, mode 0777, empty name,
    the saved size, position and seals — F_SEAL_EXEC on a 0777 inode adds the write seals."""
    fd = memfd.create("", flags=memfd.MFD_ALLOW_SEALING)
    try:
        _fill(fd.fileno(), record, data)
        os.fchmod(fd.fileno(), 0o777)
        os.lseek(fd.fileno(), record.pos, os.SEEK_SET)
        seals = record.seals
        if seals & memfd.F_SEAL_EXEC:
            seals |= memfd.EXEC_SEAL_IMPLIES
        if seals:
            fcntl.fcntl(fd.fileno(), fcntl.F_ADD_SEALS, seals)
    except BaseException:
        fd.close()
        raise
    return fd


def _fill(fd: int, record: FileRecord, data: Path | None) -> None:
    os.ftruncate(fd, record.size)
    if data is None:
        return
    with open(data, "rb") as source:
        offset = 0
        while chunk := source.read(1 << 20):
            os.pwrite(fd, chunk, offset)
            offset += len(chunk)


def check_preservable(fd: int) -> Identity:
    """EBADF if not open or O_PATH, ENOENT unless unlinked non-hugetlb shmem
    (docs/kernel.md §4.6, §6.1)."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise fail(errno.EBADF) from exc
    info = memfd.inspect(_Borrowed(fd))
    if info.path_only:
        raise fail(errno.EBADF)
    if not info.preservable:
        raise fail(errno.ENOENT)
    return st.st_dev, st.st_ino


class _Borrowed:
    """A fileno() view of an fd number the caller still owns."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd
