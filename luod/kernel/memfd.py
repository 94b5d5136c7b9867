"""memfd creation and inspection, for preflight and for tests.

docs/kernel.md §6: only unlinked shmem can be preserved (hugetlb memfds cannot); a memfd carrying
``F_SEAL_EXEC`` (what ``MFD_NOEXEC_SEAL`` or ``vm.memfd_noexec>=1`` give) comes back
*permanently write-sealed* after retrieve (docs/kernel.md §6.4), so preflight flags it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Final, NamedTuple

from luod.kernel import libc
from luod.kernel.fd import OwnedFd, SupportsFileno

TMPFS_MAGIC: Final = 0x01021994
HUGETLBFS_MAGIC: Final = 0x958458F6

MFD_CLOEXEC: Final = 0x0001
MFD_ALLOW_SEALING: Final = 0x0002
MFD_HUGETLB: Final = 0x0004
MFD_NOEXEC_SEAL: Final = 0x0008
MFD_EXEC: Final = 0x0010

F_SEAL_SEAL: Final = 0x0001
F_SEAL_SHRINK: Final = 0x0002
F_SEAL_GROW: Final = 0x0004
F_SEAL_WRITE: Final = 0x0008
F_SEAL_FUTURE_WRITE: Final = 0x0010
F_SEAL_EXEC: Final = 0x0020
EXEC_SEAL_IMPLIES: Final = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE
"""Seals the kernel adds when F_SEAL_EXEC is applied to an inode with exec bits
(docs/kernel.md §6.4)."""


class MemfdInfo(NamedTuple):
    """What ``inspect`` found (a NamedTuple: a VMM's start imports this module, and no
    ``dataclasses``)."""

    size: int
    shmem: bool
    hugetlb: bool
    unlinked: bool
    seals: int
    path_only: bool = False
    """An ``O_PATH`` fd: it names a file but cannot be used for I/O; PRESERVE_FD answers
    ``EBADF`` (the kernel's ``fdget`` skips such files), so luod refuses it first."""

    @property
    def preservable(self) -> bool:
        """Whether the 7.2/7.3 memfd handler accepts it (docs/kernel.md §6.1)."""
        return self.shmem and self.unlinked and not self.path_only

    @property
    def exec_sealed(self) -> bool:
        """F_SEAL_EXEC: the retrieved copy will be write-sealed for good (docs/kernel.md §6.4)."""
        return bool(self.seals & F_SEAL_EXEC)


def inspect(fd: SupportsFileno) -> MemfdInfo:
    """Describe ``fd`` as LUO's memfd handler would see it."""
    number = fd.fileno()
    st = os.fstat(number)
    fstype = libc.fstatfs_type(number)
    path_only = bool(fcntl.fcntl(number, fcntl.F_GETFL) & os.O_PATH)
    return MemfdInfo(
        size=st.st_size,
        shmem=fstype == TMPFS_MAGIC,
        hugetlb=fstype == HUGETLBFS_MAGIC,
        unlinked=st.st_nlink == 0,
        seals=0 if path_only else get_seals(fd),
        path_only=path_only,
    )


def get_seals(fd: SupportsFileno) -> int:
    try:
        return fcntl.fcntl(fd.fileno(), fcntl.F_GET_SEALS)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a sealable file
            return 0
        raise


def add_seals(fd: SupportsFileno, seals: int) -> None:
    fcntl.fcntl(fd.fileno(), fcntl.F_ADD_SEALS, seals)


def create(name: str, size: int = 0, *, flags: int = MFD_ALLOW_SEALING) -> OwnedFd:
    """A close-on-exec memfd of ``size`` bytes.

    Without ``MFD_NOEXEC_SEAL`` in ``flags``, ``MFD_EXEC`` is requested so that a host with
    ``vm.memfd_noexec=1`` does not silently add F_SEAL_EXEC (docs/kernel.md §6.4).
    """
    flags |= MFD_CLOEXEC
    if not flags & (MFD_NOEXEC_SEAL | MFD_HUGETLB):
        flags |= MFD_EXEC
    try:
        fd = OwnedFd(os.memfd_create(name, flags))
    except OSError as exc:
        if exc.errno != errno.EINVAL or not flags & MFD_EXEC:
            raise
        fd = OwnedFd(os.memfd_create(name, flags & ~MFD_EXEC))  # kernel before 6.3
    try:
        if size:
            os.ftruncate(fd.fileno(), size)
    except BaseException:
        fd.close()
        raise
    return fd
