"""SCM_RIGHTS packing and unpacking, shared by every socket luod passes fds on (VMM socket,
client library, keeper, charged-retrieve helper). Standard library only: the keeper imports it.
"""

from __future__ import annotations

import array
import socket
from collections.abc import Sequence

Ancillary = list[tuple[int, int, bytes]]


def unpack_rights(ancdata: Sequence[tuple[int, int, bytes]]) -> list[int]:
    """The fd numbers in SCM_RIGHTS control messages (received fds: close or wrap them now)."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return fds.tolist()


def pack_rights(fds: Sequence[int]) -> Ancillary:
    """The ancillary data that passes ``fds`` with one sendmsg (none for no fds)."""
    if not fds:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def room(count: int) -> int:
    """Ancillary buffer size for receiving up to ``count`` fds."""
    return socket.CMSG_SPACE(count * array.array("i").itemsize)
