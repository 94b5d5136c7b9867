"""Moving frames and fds over the VMM socket, blocking: the only I/O of the blocking client
(``luod.vmm.client``; the asyncio side is ``luod.vmm.async_transport``, kept apart so that a
VMM that blocks never imports asyncio). SCM_RIGHTS hygiene: one sendmsg per frame with its
fds, room for MAX_FDS fds per read, every received fd wrapped at once, MSG_CTRUNC reported to the
protocol.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Final

from luod.fdpass import pack_rights, room, unpack_rights
from luod.kernel import OwnedFd
from luod.vmm import framing
from luod.vmm.protocol import ClientProtocol, ConnectionBroken, OutFrame

ANCILLARY: Final = room(framing.MAX_FDS)


CONNECT_POLL: Final = 0.05
"""How often a client that waits for luod tries its socket again (seconds)."""


def connect(path: str | os.PathLike[str], wait: float = 0.0) -> socket.socket:
    """Connected to luod's socket. ``wait``: for that many seconds a socket that is not there
    yet (FileNotFoundError) or that nobody listens on (ConnectionRefusedError: a luod that
    died left it) is tried again, for a luod that is starting; then the error is raised."""
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(CONNECT_POLL)
            continue
        except BaseException:
            sock.close()
            raise
        return sock


def receive(sock: socket.socket) -> tuple[bytes, list[OwnedFd], bool]:
    """One recvmsg with room for MAX_FDS fds, each wrapped at once; (data, fds, truncated)."""
    data, ancillary, flags, _ = sock.recvmsg(framing.MAX_LINE, ANCILLARY, socket.MSG_CMSG_CLOEXEC)
    fds = [OwnedFd(n) for n in unpack_rights(ancillary)]
    return data, fds, bool(flags & socket.MSG_CTRUNC)


def send(sock: socket.socket, frame: OutFrame, protocol: ClientProtocol) -> None:
    """One sendmsg carries the frame and its fds; the rest of a short write follows without."""
    try:
        sent = sock.sendmsg([frame.line], pack_rights(frame.fds))
        if sent < len(frame.line):
            sock.sendall(frame.line[sent:])
    except OSError as exc:
        protocol.fail(ConnectionBroken(f"sending to luod: {exc}"), exc)
