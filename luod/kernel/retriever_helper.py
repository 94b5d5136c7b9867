"""The kept retrieve helper: RETRIEVE_FD from inside a VMM's cgroup, for luod, one request at a
time, then back to luod's cgroup (docs/kernel.md §6.4; luod.kernel.retriever starts it).

Run as ``python -S -m luod.kernel.retriever_helper FD [HOME]``: FD is its end of a
SOCK_SEQPACKET socketpair with luod; HOME the ``cgroup.procs`` it returns to after each request
(default: its own cgroup's, where luod started it). Standard library and luod.fdpass only, so
that it stays small: a fork of luod for each RECLAIM copied luod's page tables every time (1.4 ms
on a host, 7 ms under TCG).

The wire, one datagram each way:
- luod: a JSON object ``{"procs": the cgroup.procs to enter, "cmd": the ioctl, "fd_at": the
  offset of the fd field in the argument, "args": [each token's argument, hex]}``, with the
  session fd attached;
- the helper: ``ok`` with one fd per argument attached, or ``err ERRNO``. First of all, once:
  ``ready PID``.
The helper knows no layout: luod builds the arguments (luod.kernel.uapi). It leaves when luod
closes its end, or when it cannot go back to its own cgroup.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
from typing import Any

from luod.fdpass import pack_rights, room, unpack_rights

DATAGRAM_BYTES = 1 << 16


def write(path: str, data: bytes) -> None:
    """``data`` into ``path`` (a cgroup or proc file) with one write(2)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def move_to(procs: str) -> None:
    """This process into the cgroup whose ``cgroup.procs`` is ``procs``."""
    write(procs, b"0")


def own_procs() -> str:
    with open("/proc/self/cgroup", encoding="utf-8") as file:
        for line in file:
            if line.startswith("0::"):
                path = line[3:].strip().lstrip("/")
                return os.path.join("/sys/fs/cgroup", path, "cgroup.procs")
    raise OSError(errno.ENOENT, "no cgroup v2")


def retrieve(session: int, request: dict[str, Any]) -> list[int]:
    """Every argument's RETRIEVE_FD; on an error, what it got so far is closed."""
    fds: list[int] = []
    try:
        for arg in request["args"]:
            buffer = bytearray.fromhex(arg)
            fcntl.ioctl(session, int(request["cmd"]), buffer, True)
            at = int(request["fd_at"])
            fds.append(int.from_bytes(buffer[at : at + 4], sys.byteorder, signed=True))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def serve_one(channel: socket.socket, home: str) -> bool:
    """One request answered, back in ``home`` first: once luod has its answer, nothing of luod's
    is left in the VMM's cgroup, which its unit's stop removes. False: luod is gone. Raises
    OSError when the helper could not go back (it leaves: luod forks again; it never lingers
    in a VMM's cgroup)."""
    data, ancillary, _, _ = channel.recvmsg(DATAGRAM_BYTES, room(1), socket.MSG_CMSG_CLOEXEC)
    sessions = unpack_rights(ancillary)
    fds: list[int] = []
    try:
        if not data:
            return False
        try:
            fds = answer(json.loads(data), sessions)
            reply = b"ok"
        except OSError as exc:
            reply = f"err {exc.errno or errno.EIO}".encode()
        except (ValueError, KeyError, TypeError):
            reply = f"err {errno.EINVAL}".encode()
        stranded: OSError | None = None
        try:
            move_to(home)
        except OSError as exc:
            stranded = exc
        channel.sendmsg([reply], pack_rights(fds))
        if stranded is not None:
            raise stranded  # main() leaves
        return True
    finally:
        for fd in [*sessions, *fds]:
            os.close(fd)


def answer(request: dict[str, Any], sessions: list[int]) -> list[int]:
    """Into the request's cgroup, then its retrieves."""
    with contextlib.suppress(OSError):  # else charged to luod's cgroup, as the fork does
        move_to(str(request["procs"]))
    if len(sessions) != 1:
        raise OSError(errno.EBADF, "no session fd")
    return retrieve(sessions[0], request)


def main(argv: list[str]) -> int:
    channel = socket.socket(fileno=int(argv[1]))
    home = argv[2] if len(argv) > 2 else own_procs()
    channel.send(f"ready {os.getpid()}".encode())
    try:
        while serve_one(channel, home):
            pass
    except OSError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
