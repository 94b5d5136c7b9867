"""luod's fd keeper: a tiny process that holds session fds so that they outlive luod.

Run as ``python -m luod.custody.keeper --socket PATH`` (``KeeperCustody`` does that when no keeper
answers). The started process forks a daemon in its own session (so a signal to luod's process
group never reaches it), reports on a pipe whether the socket is listening, and exits: the
caller knows the keeper is ready without polling. The daemon serves the protocol of
``keeper_wire`` to processes of its own uid, and exits by itself only when it holds nothing and
nobody is connected, so a luod that withdrew everything leaves nothing behind.

Standard library only (starts in ~20 ms, stays small). fd numbers are raw ints here because
this module must not import luod.kernel; none of them leaves this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, NamedTuple

from luod.custody.keeper_wire import (
    MAX_REQUEST_BYTES,
    REQUEST_FDS_ROOM,
    WireError,
    encode_error,
    encode_ok,
    list_chunks,
    parse_request,
)
from luod.fdpass import pack_rights, unpack_rights

EXIT_READY: Final = 0
EXIT_FAILED: Final = 1
EXIT_BUSY: Final = 3
"""Another keeper holds the lock for this socket: connect to that one."""
IDLE_EXIT: Final = 30.0
"""A keeper that nobody connects to at all (its starter died at once) goes away after this."""
REPLY_TIMEOUT: Final = 10.0
"""A client that does not read its replies stalls the (single-threaded) keeper at most this."""

Reply = tuple[bytes, list[int]]


def peer_allowed(peer_uid: int, own_uid: int) -> bool:
    """Only the keeper's own uid may deposit or take fds (root's keeper: root only)."""
    return peer_uid == own_uid


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class Keeper:
    def __init__(self, listener: socket.socket, own_uid: int, idle_exit: float) -> None:
        self._listener = listener
        self._own_uid = own_uid
        self._idle_exit = idle_exit
        self._held: dict[str, int] = {}
        self._clients: set[socket.socket] = set()
        self._served = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)

    def serve(self) -> None:
        """Serve until empty and alone (after a first client), or idle from the start."""
        deadline = time.monotonic() + self._idle_exit
        while not (self._served and not self._held and not self._clients):
            timeout = None if self._served else max(deadline - time.monotonic(), 0.0)
            events = self._selector.select(timeout)
            if not events and not self._served:
                return
            for key, _mask in events:
                self._on_event(key.fileobj)  # type: ignore[arg-type]

    def _on_event(self, sock: socket.socket) -> None:
        try:
            if sock is self._listener:
                self._accept()
            else:
                self._on_readable(sock)
        except Exception:  # a bug or a vanished peer costs one connection, never the fds
            if sock is not self._listener:
                self._drop(sock)

    def _accept(self) -> None:
        try:
            conn, _address = self._listener.accept()
        except OSError:
            return
        try:
            uid = peer_uid(conn)
        except OSError:
            conn.close()
            return
        if not peer_allowed(uid, self._own_uid):
            with contextlib.suppress(OSError):
                conn.send(encode_error(f"uid {uid} may not use the keeper of uid {self._own_uid}"))
            conn.close()
            return
        conn.settimeout(REPLY_TIMEOUT)
        self._clients.add(conn)
        self._selector.register(conn, selectors.EVENT_READ)
        self._served = True

    def _on_readable(self, conn: socket.socket) -> None:
        room = socket.CMSG_SPACE(REQUEST_FDS_ROOM * 4)
        try:
            data, ancdata, flags, _ = conn.recvmsg(MAX_REQUEST_BYTES, room, socket.MSG_CMSG_CLOEXEC)
        except OSError:
            self._drop(conn)
            return
        if not data and not ancdata:
            self._drop(conn)  # end of stream (or an empty message, which says nothing either)
            return
        for payload, fds in self._handle(data, unpack_rights(ancdata), flags):
            conn.sendmsg([payload], pack_rights(fds))

    def _handle(self, data: bytes, fds: list[int], flags: int) -> list[Reply]:
        """Answer one request; takes ownership of ``fds`` (kept by PUT, else closed)."""
        try:
            request = parse_request(data, len(fds), flags)
        except WireError as exc:
            _close_all(fds)
            return [(encode_error(str(exc)), [])]
        if request.verb == "PUT":
            self._put(request.name, fds[0])
        elif request.verb == "DEL":
            self._delete(request.name)
        elif request.verb == "LIST":
            return self._list()
        return [(encode_ok(str(os.getpid()) if request.verb == "PING" else ""), [])]

    def _put(self, name: str, fd: int) -> None:
        old = self._held.pop(name, None)
        self._held[name] = fd
        if old is not None:
            os.close(old)

    def _delete(self, name: str) -> None:
        fd = self._held.pop(name, None)
        if fd is not None:
            os.close(fd)

    def _list(self) -> list[Reply]:
        # The fds are sent before any other request runs, so no DEL can close them meanwhile.
        names = list(self._held)
        return [(payload, [self._held[n] for n in chunk]) for payload, chunk in list_chunks(names)]

    def _drop(self, conn: socket.socket) -> None:
        if conn in self._clients:
            self._clients.discard(conn)
            self._selector.unregister(conn)
        conn.close()


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _lock(path: Path) -> int | None:
    """Hold ``PATH.lock`` for life, so that one keeper at a time owns the socket path.

    The lock file is never removed: a keeper that unlinked it while exiting could let two new
    keepers lock two different files. Its content (our pid) is for operators and tests.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW  # never a planted symlink
    fd = os.open(f"{path}.lock", flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _listen(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        os.unlink(path)  # a dead keeper's socket: we hold the lock, so no live keeper uses it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o077)  # owner only, besides the SO_PEERCRED check
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(64)
    return listener


def _harden() -> None:
    # Luod's process group may be signalled as a whole; a keeper must outlive that. (setsid
    # already takes us out of the group; ignoring covers a kill aimed at the wrong pid too.)
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # one fd per session: 1024 is not enough
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(OSError):  # an OOM kill of the keeper would drop every VM's RAM
        Path("/proc/self/oom_score_adj").write_text("-1000")
    os.chdir("/")  # do not pin the file system luod was started from


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)


def _report(ready: int | None, message: str) -> None:
    if ready is not None:
        os.write(ready, message.encode())
        os.close(ready)


def _run(path: Path, idle_exit: float, ready: int | None) -> int:
    try:
        lock = _lock(path)
    except OSError as exc:
        _report(ready, f"cannot lock {path}.lock: {exc}")
        return EXIT_FAILED
    if lock is None:
        _report(ready, "busy")
        return EXIT_BUSY
    try:
        listener = _listen(path)
    except OSError as exc:
        _report(ready, f"cannot listen on {path}: {exc}")
        return EXIT_FAILED
    _harden()
    _report(ready, "ready")
    Keeper(listener, os.getuid(), idle_exit).serve()
    with contextlib.suppress(OSError):
        os.unlink(path)
    listener.close()
    return EXIT_READY


def _await_ready(reader: int) -> int:
    """In the starter: wait for the daemon's word, then exit with its meaning."""
    chunks = []
    while chunk := os.read(reader, 4096):
        chunks.append(chunk)
    message = b"".join(chunks).decode(errors="replace")
    if message in ("ready", "busy"):
        return EXIT_READY if message == "ready" else EXIT_BUSY
    print(f"luod keeper: {message or 'died during start-up'}", file=sys.stderr)
    return EXIT_FAILED


class Args(NamedTuple):
    socket: Path
    idle_exit: float = IDLE_EXIT
    foreground: bool = False


def parse_args(argv: Sequence[str] | None) -> Args:
    """The command line. luod runs ``--socket PATH``, read here without argparse: the keeper's
    start is on the path after every kexec of a host without systemd's fd store, and argparse
    with re was 7.6 of its 27 ms of imports. Anything else goes through argparse."""
    given = list(sys.argv[1:] if argv is None else argv)
    if len(given) == 2 and given[0] == "--socket" and given[1] and not given[1].startswith("-"):
        return Args(Path(given[1]))
    import argparse

    parser = argparse.ArgumentParser(prog="python -m luod.custody.keeper")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT)
    parser.add_argument("--foreground", action="store_true", help="no fork (debugging)")
    parsed = parser.parse_args(given)
    return Args(parsed.socket, parsed.idle_exit, parsed.foreground)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    path = args.socket.absolute()  # the daemon changes to "/" but must unlink it at exit
    if args.foreground:
        return _run(path, args.idle_exit, None)
    reader, writer = os.pipe2(os.O_CLOEXEC)
    if os.fork():
        os.close(writer)
        return _await_ready(reader)
    os.close(reader)
    os.setsid()
    _detach_stdio()
    return _run(path, args.idle_exit, writer)


if __name__ == "__main__":
    raise SystemExit(main())
