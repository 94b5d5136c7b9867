"""The VMM socket server: moves bytes and fds between clients and a request handler.

Thin asyncio adapter over the pure codec. SCM_RIGHTS hygiene: every received fd is wrapped in
an OwnedFd at once; MSG_CTRUNC drops the connection after closing what did arrive; a frame that
fails to decode has its fds closed. Each connection has bounded input (one frame) and output
queues; a client that does not read its replies/events is disconnected, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Final, Protocol

import structlog

from luod.core.access import Peer
from luod.errors import LuodError
from luod.fdpass import pack_rights, peer_credentials, room, unpack_rights
from luod.kernel import OwnedFd
from luod.kernel.charged import cgroup_of
from luod.vmm import codec, parse
from luod.vmm.lull import Lull

log = structlog.get_logger("luod.vmm")
RECV_BYTES: Final = 65536
ANCILLARY: Final = room(codec.MAX_FDS)
MAX_QUEUED_BYTES: Final = 4 * 1024 * 1024
SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)  # Linux's value; Python lacks it
MAX_PEER_GROUPS: Final = 256  # getsockopt takes 1024 bytes at most; more groups: ERANGE
ACCEPT_BACKOFF: Final = 0.1
"""After accept(2) fails (EMFILE: luod is out of fds), stop accepting for this long."""
ACCEPT_BATCH: Final = 128
"""Clients accepted in one turn of the loop at most (asyncio's own servers take their backlog)."""
ACCEPT_LOG_EVERY: Final = 10.0
"""At most one ``accept-failed`` line per this many seconds; it counts the failures since."""


class Handler(Protocol):
    async def handle(self, conn: Connection, request: codec.Request) -> codec.Outgoing: ...

    def disconnected(self, conn: Connection) -> None: ...


class Connection:
    def __init__(self, sock: socket.socket, peer: Peer, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.peer = peer
        self.reader = codec.FrameReader()
        self.inbox: asyncio.Queue[codec.Frame | None] = asyncio.Queue()
        self.subscribed: set[str] = set()
        self.capabilities: frozenset[str] = frozenset()  # granted in HELLO (core.dialect)
        self._loop = loop
        self._out: deque[tuple[memoryview, tuple[OwnedFd, ...]]] = deque()
        self._queued = 0
        self.closed = False
        self.reading = False
        self._writing = False  # a reply waits for the socket to take it (add_writer)

    def read_from(self, callback: Callable[[Connection], None]) -> None:
        """Watch the socket for input (``callback(self)``) while a frame is not being served."""
        if not self.closed and not self.reading:
            self._loop.add_reader(self.sock.fileno(), callback, self)
            self.reading = True

    def stop_reading(self) -> None:
        """One frame at a time (issue 13, finding 4): until it is answered, what the client
        sends next, and its fds, wait in the client's socket, not in luod. Called lazily, when
        the socket turns readable while the connection is busy: a client that waits for each
        reply (every VMM) costs no epoll_ctl(2) pair per request."""
        if self.reading:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self.sock.fileno())
            self.reading = False

    def push(self, message: codec.Outgoing) -> None:
        """Queue a frame (reply or event); its fds are closed once sent or dropped."""
        if self.closed:
            _close_all(message.fds)
            return
        self._out.append((memoryview(message.line), message.fds))
        self._queued += len(message.line)
        if self._queued > MAX_QUEUED_BYTES:
            log.warning("client-too-slow", pid=self.peer.pid, queued=self._queued)
            self.close()
            return
        self._flush()

    def _flush(self) -> None:
        while self._out and not self.closed:
            data, fds = self._out[0]
            try:
                sent = self.sock.sendmsg([data], _rights(fds))
            except BlockingIOError:
                self._loop.add_writer(self.sock.fileno(), self._flush)
                self._writing = True
                return
            except OSError as exc:
                log.info("client-send-failed", pid=self.peer.pid, error=str(exc))
                self.close()
                return
            _close_all(fds)
            self._queued -= sent
            if sent < len(data):
                self._out[0] = (data[sent:], ())
                continue
            self._out.popleft()
        self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self.sock.fileno())
            self._writing = False

    def close(self) -> None:
        if self.closed:
            return
        self.stop_reading()
        self.closed = True
        self._stop_writing()
        for _, fds in self._out:
            _close_all(fds)
        self._out.clear()
        self.reader.close()
        self.sock.close()
        self.inbox.put_nowait(None)


class VmmServer:
    def __init__(
        self,
        listener: socket.socket,
        handler: Handler,
        connections_per_uid: int = 1100,
        deferred: frozenset[type[codec.Request]] = frozenset(),
    ) -> None:
        """``deferred``: the requests that wait for a lull (luod.vmm.lull) before they are
        handled; the others go first."""
        self.listener = listener
        self.handler = handler
        self.deferred = deferred
        self.lull = Lull()
        self.connections: set[Connection] = set()
        self.connections_per_uid = connections_per_uid
        self._per_uid: Counter[int] = Counter()  # open connections by uid: counted at each
        # accept, where summing over every connection cost O(connections) (bench/NOTES.md)
        self._tasks: asyncio.TaskGroup | None = None
        self._accept_failures = 0
        self._next_accept_log = 0.0
        self._resume: asyncio.TimerHandle | None = None
        self._answering: set[Connection] = set()  # a request of theirs is being answered

    async def drain(self, timeout: float) -> None:
        """luod is stopping: read no more requests, and give those being answered (an ABORT
        waits for the update's end) up to ``timeout`` seconds to get their replies out."""
        for conn in self.connections:
            conn.stop_reading()
        deadline = asyncio.get_running_loop().time() + timeout
        while self._answering and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def serve(self) -> None:
        """Accept clients until cancelled; each connection is served by a task of this group."""
        loop = asyncio.get_running_loop()
        self.listener.setblocking(False)
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            loop.add_reader(self.listener.fileno(), self._accept, loop)
            try:
                await asyncio.Future()
            finally:
                loop.remove_reader(self.listener.fileno())
                if self._resume is not None:
                    self._resume.cancel()
                self.lull.close()
                for conn in list(self.connections):
                    conn.close()

    def _accept(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take every client waiting, up to ACCEPT_BATCH (after a kexec, each VMM connects at
        once: one accept a loop pass would hold the last VM's RECLAIM behind the others')."""
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: keep serving the others
                self._back_off(loop, exc)
                return
            self._admit(sock, loop)

    def _admit(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.lull.stir()
        try:
            sock.setblocking(False)
            peer = peer_of(sock)
        except OSError as exc:  # the client left already
            log.info("accept-failed", error=str(exc))
            sock.close()
            return
        conn = Connection(sock, peer, loop)
        if self._per_uid[peer.uid] >= self.connections_per_uid:
            self._refuse(conn)
            return
        self.connections.add(conn)
        self._per_uid[peer.uid] += 1
        conn.read_from(self._readable)
        assert self._tasks is not None
        self._tasks.create_task(self._serve_connection(conn))

    def _forget(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self._per_uid[conn.peer.uid] -= 1
            if not self._per_uid[conn.peer.uid]:
                del self._per_uid[conn.peer.uid]

    def _refuse(self, conn: Connection) -> None:
        log.warning("too-many-connections", uid=conn.peer.uid, pid=conn.peer.pid)
        error = LuodError(
            "too-many-connections",
            f"uid {conn.peer.uid} has {self.connections_per_uid} connections open already",
            "close connections you do not use, or raise limits.connections_per_uid",
        )
        conn.push(codec.encode(codec.error_reply(None, None, error)))
        conn.close()

    def _back_off(self, loop: asyncio.AbstractEventLoop, exc: OSError) -> None:
        """Stop accepting for ACCEPT_BACKOFF (the listener stays readable while the failure
        lasts: accepting again at once would spin), and log at most once per ACCEPT_LOG_EVERY."""
        self._accept_failures += 1
        now = loop.time()
        if now >= self._next_accept_log:
            log.error(
                "accept-failed",
                error=str(exc),
                failures=self._accept_failures,
                connections=len(self.connections),
                hint="luod is out of file descriptors: raise LimitNOFILE, or lower limits.*",
            )
            self._accept_failures = 0
            self._next_accept_log = now + ACCEPT_LOG_EVERY
        loop.remove_reader(self.listener.fileno())
        self._resume = loop.call_later(ACCEPT_BACKOFF, self._resume_accepting, loop)

    def _resume_accepting(self, loop: asyncio.AbstractEventLoop) -> None:
        self._resume = None
        loop.add_reader(self.listener.fileno(), self._accept, loop)

    def _readable(self, conn: Connection) -> None:
        if conn in self._answering or not conn.inbox.empty():  # busy: input waits in the socket
            conn.stop_reading()
            return
        try:
            data, fds, truncated = receive(conn.sock)
        except BlockingIOError:
            return
        except OSError as exc:
            log.info("client-recv-failed", pid=conn.peer.pid, error=str(exc))
            conn.close()
            return
        if truncated:
            _close_all(fds)
            self._fatal(
                conn,
                LuodError(
                    "too-many-fds",
                    "ancillary data truncated (MSG_CTRUNC)",
                    f"attach at most {codec.MAX_FDS} fds per message",
                ),
            )
            return
        if not data:
            _close_all(fds)
            conn.close()  # EOF; a half-sent message's fds are closed with the reader
            return
        try:
            frames = conn.reader.feed(data, fds)
        except LuodError as exc:
            self._fatal(conn, exc)
            return
        for frame in frames:
            conn.inbox.put_nowait(frame)
        self.lull.stir()

    def _fatal(self, conn: Connection, error: LuodError) -> None:
        """Framing is lost: answer once, then drop the connection."""
        log.warning("client-protocol-error", pid=conn.peer.pid, code=error.code)
        conn.push(codec.encode(codec.error_reply(None, None, error)))
        conn.close()

    async def _serve_connection(self, conn: Connection) -> None:
        """Answer the connection's frames in order. Nothing raised here may reach the task
        group: one client's failure would stop luod (issue 13, finding 1)."""
        try:
            while (frame := await conn.inbox.get()) is not None:
                self._answering.add(conn)
                try:
                    conn.push(await self._answer(conn, frame))
                finally:
                    self._answering.discard(conn)
                if conn.inbox.empty():
                    conn.read_from(self._readable)
        except Exception:
            log.exception("connection-failed", pid=conn.peer.pid, uid=conn.peer.uid)
        finally:
            while not conn.inbox.empty():
                leftover = conn.inbox.get_nowait()
                if leftover is not None:
                    _close_all(leftover.fds)
            conn.close()
            self._forget(conn)
            try:
                self.handler.disconnected(conn)
            except Exception:
                log.exception("disconnect-failed", pid=conn.peer.pid)

    async def _answer(self, conn: Connection, frame: codec.Frame) -> codec.Outgoing:
        try:
            request = parse.decode_request(frame)
        except LuodError as exc:
            _close_all(frame.fds)
            return codec.encode(codec.error_reply(exc.cmd, exc.seq, exc))
        except Exception:  # a codec bug: the frame is answered, luod goes on
            _close_all(frame.fds)
            log.exception("decode-crashed")
            return codec.encode(codec.error_reply(None, None, _internal()))
        try:
            if type(request) in self.deferred:
                await self.lull.wait()
            else:
                self.lull.stir()
            return await self.handler.handle(conn, request)
        except LuodError as exc:
            return codec.encode(codec.error_reply(request.cmd, request.seq, exc))
        except Exception:  # a bug must not take the daemon (and its sessions) down
            log.exception("handler-crashed", cmd=request.cmd)
            return codec.encode(codec.error_reply(request.cmd, request.seq, _internal()))
        finally:
            _close_all(request.fds)  # the handler dup'd or consumed what it kept


def _internal() -> LuodError:
    return LuodError("internal", "internal error in luod", "see luod's log (handler-crashed)")


def receive(sock: socket.socket) -> tuple[bytes, list[OwnedFd], bool]:
    data, ancillary, flags, _ = sock.recvmsg(RECV_BYTES, ANCILLARY, socket.MSG_CMSG_CLOEXEC)
    fds = [OwnedFd(n) for n in unpack_rights(ancillary)]
    return data, fds, bool(flags & socket.MSG_CTRUNC)


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = peer_credentials(sock)
    return Peer(uid, gid, pid, cgroup_of(pid), peer_groups(sock))


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """The peer's supplementary groups (SO_PEERGROUPS, Linux >= 4.13; empty if unknown)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * MAX_PEER_GROUPS)
    except OSError:
        return frozenset()
    return frozenset(struct.unpack(f"{len(raw) // 4}I", raw))


def _rights(fds: tuple[OwnedFd, ...]) -> list[tuple[int, int, bytes]]:
    return pack_rights([fd.fileno() for fd in fds])


def _close_all(fds: Any) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            fd.close()
