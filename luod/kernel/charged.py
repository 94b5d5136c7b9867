"""RETRIEVE_FD with the memory charged to the right cgroup (docs/kernel.md §6.4).

The kernel charges a retrieved memfd's pages to the memcg of the task that retrieves. luod
retrieves in a helper that first moves itself into the owner's cgroup, then passes the fds back
over a socketpair: the kept one (luod.kernel.retriever), else one forked for the request. Only
the first retrieve restores (and charges) pages; later ones return the same open file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from luod.fdpass import pack_rights, room, unpack_rights
from luod.kernel.errors import LuoError
from luod.kernel.fd import OwnedFd
from luod.kernel.session import Session

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
CGROUP_READ_BYTES: Final = 1 << 13
"""/proc/PID/cgroup is a line per hierarchy: one read(2) of this takes all of it, but for a
path near PATH_MAX (then it reads on to the end)."""


def cgroup_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The cgroup v2 path of ``pid`` ("0::/path"), or None without cgroup v2. Read with raw
    read(2)s: luod reads it at every VMM connection, and ``Path.read_text`` took 3x as long
    (a buffered text file: fstat, ioctl, two lseeks on top of the reads)."""
    try:
        fd = os.open(f"{proc}/{pid}/cgroup", os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = list(iter(lambda: os.read(fd, CGROUP_READ_BYTES), b""))
        finally:
            os.close(fd)
    except OSError:
        return None
    for line in os.fsdecode(b"".join(chunks)).splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def retrieve_charged(session: Session, tokens: Sequence[int], cgroup: str | None) -> list[OwnedFd]:
    """RETRIEVE_FD each token from inside ``cgroup``: in luod's process when it may
    (``in_place``), else in a forked helper. luod keeps a helper instead
    (luod.kernel.retriever), and forks only while that one starts or after it is lost."""
    if in_place(cgroup):
        return [session.retrieve(token) for token in tokens]
    assert cgroup is not None
    return retrieve_forked(session, tokens, cgroup)


def in_place(cgroup: str | None) -> bool:
    """Whether luod itself may retrieve for a VMM in ``cgroup``: when cgroup is None, luod's
    own (its pages are charged there either way, and a fork costs more than the rest of a
    RECLAIM: bench/NOTES.md), or gone. luod's cgroup is read each time: a process can be moved."""
    return cgroup is None or cgroup == cgroup_of(os.getpid()) or not procs_of(cgroup).exists()


def migrations_favored(mountinfo: Path = Path("/proc/self/mountinfo")) -> bool | None:
    """Whether the cgroup v2 hierarchy at CGROUP_ROOT is mounted with ``favordynmods`` (None:
    no cgroup v2 there). Without it, writing to a ``cgroup.procs`` takes the kernel's
    threadgroup rwsem for writing, which waits for an RCU grace period unless another
    migration came just before: the first RECLAIM from a VMM's cgroup after a quiet spell
    waited 5-18 ms in a TCG guest, 0.3-2.4 ms with it (docs/kernel.md §6.4). Set by
    ``cgroup_favordynmods=true`` on the kernel's command line, or a remount."""
    options = cgroup2_options(mountinfo)
    return None if options is None else "favordynmods" in options


def cgroup2_options(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str] | None:
    """The super options of the cgroup v2 mount at CGROUP_ROOT (the last mount there, the one
    seen), as /proc/self/mountinfo gives them; None when there is none, or no mountinfo."""
    try:
        lines = mountinfo.read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields, _, fs = line.partition(" - ")
        mounted, super_options = fields.split(), fs.split()
        if mounted[4:5] == [str(CGROUP_ROOT)] and super_options[:1] == ["cgroup2"]:
            found = ",".join(super_options[2:3]).split(",")
    return found


def procs_of(cgroup: str) -> Path:
    """The ``cgroup.procs`` file a process writes to enter ``cgroup``."""
    return CGROUP_ROOT / cgroup.lstrip("/") / "cgroup.procs"


def retrieve_forked(session: Session, tokens: Sequence[int], cgroup: str) -> list[OwnedFd]:
    """RETRIEVE_FD in a helper forked from luod that moves itself into ``cgroup`` first."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the helper process
        parent.close()
        _helper(session, tokens, cgroup, child)
    child.close()
    try:
        return _receive(parent, len(tokens), session, tokens)
    finally:
        parent.close()
        os.waitpid(pid, 0)


def _helper(session: Session, tokens: Sequence[int], cgroup: str, channel: socket.socket) -> None:
    code = 0
    try:
        with contextlib.suppress(OSError):  # else charged to luod's cgroup
            procs_of(cgroup).write_text("0")
        fds = [session.retrieve(token).detach() for token in tokens]
        channel.sendmsg([b"ok"], pack_rights(fds))
    except OSError as exc:
        code = exc.errno or errno.EIO
        channel.send(f"err {code}".encode())
    finally:
        os._exit(0 if code == 0 else 1)


def _receive(
    channel: socket.socket, count: int, session: Session, tokens: Sequence[int]
) -> list[OwnedFd]:
    """The helper's answer: its fds, or its errno raised as RETRIEVE_FD's (EIO when it said
    nothing that makes sense)."""
    data, ancillary, flags, _ = channel.recvmsg(64, room(count), socket.MSG_CMSG_CLOEXEC)
    fds = [OwnedFd(n) for n in unpack_rights(ancillary)]
    if flags & socket.MSG_CTRUNC or data != b"ok" or len(fds) != count:
        for fd in fds:
            fd.close()
        code = int(data.split()[1]) if data.startswith(b"err ") else errno.EIO
        raise LuoError(code, "RETRIEVE_FD", session=session.known_name, token=tokens[0])
    return fds
