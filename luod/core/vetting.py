"""What luod checks of an fd a VMM hands over, before any fd of the request is preserved.

LUO cannot unpreserve one file (docs/kernel.md §4.6), so an fd the kernel would refuse for sure
is refused first, and the whole PRESERVE with it (issue 13, findings 8 and 10).
"""

from __future__ import annotations

import errno

from luod.core.model import FileSpec
from luod.errors import LuodError
from luod.kernel import OwnedFd, memfd


def vet(spec: FileSpec, fd: OwnedFd) -> memfd.MemfdInfo:
    """The fd's shape; ``bad-fd`` for an O_PATH fd, ``luo-enoent`` for what has no handler."""
    shape = memfd.inspect(fd)
    if shape.path_only:
        raise LuodError(
            "bad-fd",
            f"file {spec.name!r} is an O_PATH fd",
            "pass the file itself (memfd_create, or open it for reading and writing)",
            errno.EBADF,
        )
    if shape.hugetlb:
        hint = (
            "a hugetlb memfd has no LUO handler (docs/kernel.md §6.1): back guest RAM "
            "with plain memfds"
        )
    elif spec.kind == "memfd" and not shape.preservable:
        hint = (
            f"{spec.name!r} is not a memfd (unlinked shmem), and only memfds have a LUO "
            "handler (docs/kernel.md §6.1)"
        )
    else:
        return shape
    raise LuodError("luo-enoent", f"file {spec.name!r} cannot be preserved", hint, errno.ENOENT)
