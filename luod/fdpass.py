"""SCM_RIGHTS packing and unpacking, shared by every socket luod passes fds on (VMM socket,
client library, keeper, charged-retrieve helper), and a peer's SO_PEERCRED (the VMM socket, the
REST worker's unix listener). Standard library only: the keeper imports it.
"""

from __future__ import annotations

import array
import socket
import struct
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


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """The pid, uid and gid of a unix socket's peer (SO_PEERCRED), as it connected."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid
