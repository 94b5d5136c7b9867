"""KeeperCustody: session fds held by the fd keeper process (``luod.custody.keeper``).

Used when luod does not run under systemd with an fd store. The keeper is started on first use
and outlives luod; a restarted luod connects to the same keeper and recovers every fd.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
from pathlib import Path
from typing import Final

from luod.custody.fdname import check_name
from luod.custody.keeper_start import KeeperStart, start_keeper
from luod.custody.keeper_wire import (
    MAX_FDS_PER_MESSAGE,
    Reply,
    WireError,
    encode_request,
    parse_reply,
)
from luod.errors import LuodError
from luod.fdpass import pack_rights, unpack_rights
from luod.kernel.fd import OwnedFd, SupportsFileno

CALL_TIMEOUT: Final = 10.0
CONNECT_ATTEMPTS: Final = 5
"""A keeper that is exiting (it held nothing) refuses us once; the next attempt starts another."""
MAX_SUN_PATH: Final = 107
REPLY_BYTES: Final = 64 * 1024
LOST_HINT: Final = (
    "if the keeper died, every fd it held is now held by luod alone: do not stop luod; open a "
    "new custody and deposit every session again"
)


class KeeperCustody:
    """Custody in a keeper process at ``socket_path`` (started there when none answers)."""

    kind: Final = "keeper"

    def __init__(
        self,
        socket_path: Path,
        *,
        start: bool = True,
        timeout: float = CALL_TIMEOUT,
        starting: KeeperStart | None = None,
    ) -> None:
        """``starting``: a start of the keeper already under way (luod.start began it before
        luod's imports); awaited first. If it failed, connecting goes on as without it, and
        starts the keeper again (the error, if any, is that start's)."""
        self.socket_path = Path(socket_path)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None
        if starting is not None:
            with contextlib.suppress(LuodError):
                starting.finish(timeout)
        self._sock, self.keeper_pid = _connect(self.socket_path, start, timeout)

    def deposit(self, name: str, fd: SupportsFileno) -> None:
        self._call(encode_request("PUT", check_name(name)), fd)

    def withdraw(self, name: str) -> None:
        self._call(encode_request("DEL", check_name(name)), None)

    def recover(self) -> dict[str, OwnedFd]:
        recovered: dict[str, OwnedFd] = {}
        try:
            with self._lock:
                sock = self._socket()
                self._send(sock, encode_request("LIST"), None)
                more = True
                while more:
                    reply, fds = self._receive(sock)
                    for name, fd in zip(reply.names, fds, strict=True):
                        _replace(recovered, name, fd)
                    more = reply.more
        except BaseException:
            for fd in recovered.values():
                fd.close()
            raise
        return recovered

    def check(self) -> None:
        """PING: raises ``custody-unavailable`` (or ``custody-closed``) when the keeper is gone."""
        self._call(encode_request("PING"), None)

    def renew(self) -> None:
        """Connect again, starting a new keeper when none answers. The caller deposits every
        session again: a new keeper holds nothing (CustodyGuard does both)."""
        with self._lock:
            self.close()
            self._sock, self.keeper_pid = _connect(self.socket_path, True, self._timeout)

    def close(self) -> None:
        """Disconnect; the keeper keeps every fd (and exits by itself only if it holds none)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _call(self, payload: bytes, fd: SupportsFileno | None) -> None:
        with self._lock:
            sock = self._socket()
            self._send(sock, payload, fd)
            reply, fds = self._receive(sock)
        for extra in fds:  # parse_reply allows none here; belt and braces
            extra.close()
        if not reply.ok:
            raise LuodError(
                "custody-refused",
                f"the fd keeper refused {payload.decode()!r}: {reply.detail}",
                hint="a luod bug (the request was checked before sending); please report it",
            )

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise LuodError("custody-closed", f"custody at {self.socket_path} is closed")
        return self._sock

    def _send(self, sock: socket.socket, payload: bytes, fd: SupportsFileno | None) -> None:
        rights = pack_rights([fd.fileno()]) if fd is not None else []
        try:
            sock.sendmsg([payload], rights, socket.MSG_NOSIGNAL)
        except OSError as exc:
            raise self._lost(f"sending {payload.decode()!r} failed: {exc}", exc) from exc

    def _receive(self, sock: socket.socket) -> tuple[Reply, list[OwnedFd]]:
        room = socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * 4)
        try:
            data, ancdata, flags, _ = sock.recvmsg(REPLY_BYTES, room, socket.MSG_CMSG_CLOEXEC)
        except OSError as exc:
            raise self._lost(f"no reply: {exc}", exc) from exc
        fds = [OwnedFd(number) for number in unpack_rights(ancdata)]
        if not data and not fds:
            raise self._lost("the keeper closed the connection", None)
        try:
            return parse_reply(data, len(fds), flags), fds
        except WireError as exc:
            for fd in fds:
                fd.close()
            truncated = bool(flags & socket.MSG_CTRUNC)
            raise self._lost(f"bad reply: {exc}", None, truncated=truncated) from exc

    def _lost(self, what: str, exc: OSError | None, *, truncated: bool = False) -> LuodError:
        # A connection that failed mid-exchange is out of step: never reuse it. A silent
        # reconnect could start an empty keeper and hide that the old one lost its fds.
        self.close()
        message = f"fd keeper at {self.socket_path} (pid {self.keeper_pid}): {what}"
        if truncated:
            hint = "luod ran out of fd numbers: raise its limit (LimitNOFILE=, ulimit -n)"
        else:
            hint = LOST_HINT
        return LuodError("custody-unavailable", message, hint, exc.errno if exc else None)


def _replace(table: dict[str, OwnedFd], name: str, fd: OwnedFd) -> None:
    old = table.pop(name, None)
    table[name] = fd
    if old is not None:
        old.close()


def _connect(path: Path, start: bool, timeout: float) -> tuple[socket.socket, int]:
    if len(os.fsencode(path)) > MAX_SUN_PATH:
        raise LuodError(
            "custody-unavailable",
            f"keeper socket path {path} is longer than {MAX_SUN_PATH} bytes (AF_UNIX limit)",
            hint="use a shorter runtime directory",
        )
    problem = "nothing listens there"
    for _attempt in range(CONNECT_ATTEMPTS):
        try:
            return _handshake(path, timeout)
        except (FileNotFoundError, ConnectionError) as exc:
            problem = str(exc)  # no keeper, a dead keeper's socket, or one that is exiting
        if not start:
            break
        start_keeper(path, timeout)
    raise LuodError(
        "custody-unavailable",
        f"no fd keeper answers at {path}: {problem}",
        hint=f"check that {path.parent} exists and is writable; try "
        f"'{sys.executable} -m luod.custody.keeper --socket {path} --foreground'",
    )


def _handshake(path: Path, timeout: float) -> tuple[socket.socket, int]:
    """Connect and PING: a reply proves the keeper accepted us (it is not on its way out)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        _check_keeper_uid(sock, path)
        sock.send(encode_request("PING"))
        data = sock.recv(REPLY_BYTES)
        if not data:
            raise ConnectionResetError(f"the keeper at {path} closed the connection")
        reply = parse_reply(data, 0, 0)
    except WireError as exc:
        sock.close()
        raise LuodError("custody-unavailable", f"{path} is not an fd keeper: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    if not reply.ok:  # e.g. a keeper of another uid
        sock.close()
        raise LuodError("custody-unavailable", f"the fd keeper at {path}: {reply.detail}")
    return sock, int(reply.detail) if reply.detail.isdigit() else 0


def _check_keeper_uid(sock: socket.socket, path: Path) -> None:
    """Session fds go only to a keeper of luod's own uid (SO_PEERCRED of its listener): a
    socket planted at ``path`` by another user must never receive one."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    if uid != os.geteuid():
        raise LuodError(
            "custody-unavailable",
            f"the fd keeper at {path} (pid {pid}) runs as uid {uid}, not as luod's uid "
            f"{os.geteuid()}: luod gives it nothing",
            hint=f"someone else listens at {path}: remove it and check who can write to "
            f"{path.parent}",
        )
