"""The client side of luod's VMM protocol, without I/O (h11 is the model).

Requests go in and come out as frames to write (bytes plus the fds to attach); what the socket
delivered goes in (bytes, the fds that came with them, whether the kernel truncated them) and
comes out as replies, matched to their request by ``seq``, and events, queued in order. The
shells in ``luod.vmm.client`` only move bytes and fds between this object and a socket, so the
blocking and the asyncio client cannot drift apart.

Ownership: fds the caller sends stay the caller's (the frame carries their numbers). Every fd
that arrives is wrapped in an ``OwnedFd`` at once and owned by the reply or event it came with;
this object closes it when nobody can take it any more (a reply nobody waits for, a frame it
cannot read, ``close``).

Negotiation: unless built with ``capabilities=None``, the first request is preceded by a HELLO
that asks for ``capabilities`` (api/vmm-protocol.md §2a); its reply is consumed here and sets
``granted``. A client that sends HELLO itself negotiates with that one instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Final, NamedTuple, NoReturn

from luod.core.capabilities import ALL
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import framing

DEFAULT_CAPABILITIES: Final = tuple(sorted(ALL))


class ConnectionBroken(ConnectionError):
    """The connection to luod is unusable (closed, truncated fds, garbage): open a new client.

    luod keeps custody of everything already handed over; nothing is lost by reconnecting.
    """


class Event(NamedTuple):
    """A message luod pushed: ``name`` (``FREEZE``...), its fields, and the fds it carried."""

    name: str
    data: dict[str, Any]
    fds: tuple[OwnedFd, ...] = ()

    def close(self) -> None:
        close_all(self.fds)

    def __enter__(self) -> Event:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Reply(NamedTuple):
    """luod's answer to one request: the message and the fds attached to it."""

    data: dict[str, Any]
    fds: tuple[OwnedFd, ...] = ()


class OutFrame(NamedTuple):
    """One frame to write with one sendmsg: the line and the caller's fd numbers to attach."""

    line: bytes
    fds: tuple[int, ...] = ()


class ClientProtocol:
    """One connection's protocol state; see the module docstring."""

    def __init__(self, capabilities: Iterable[str] | None = DEFAULT_CAPABILITIES) -> None:
        self._reader = framing.FrameReader()
        self._outbox: list[OutFrame] = []
        self._pending: dict[int, str] = {}  # seq -> command, oldest first
        self._replies: dict[int, Reply] = {}
        self._events: deque[Event] = deque()
        self._next_seq = 0
        self._wanted = None if capabilities is None else tuple(capabilities)
        self._auto_hello: int | None = None  # seq of the HELLO this object sent by itself
        self.granted: frozenset[str] | None = None  # None: not negotiated (luo-agent dialect)
        self.broken: ConnectionBroken | None = None

    # --- requests out ---------------------------------------------------------------------
    def send(self, cmd: str, fields: dict[str, Any], fds: tuple[int, ...] = ()) -> int:
        """Queue a request (fields that are None are left out); returns its ``seq``."""
        self.check()
        if cmd == "HELLO" and fields.get("capabilities") is None:  # what this client asks for
            fields = {**fields, "capabilities": list(self._wanted or ())}
        elif self._wanted is not None and cmd != "HELLO" and not self._hello_sent():
            hello = {"version": framing.VERSION, "capabilities": list(self._wanted)}
            self._auto_hello = self._queue("HELLO", hello, ())
        return self._queue(cmd, fields, fds)

    def next_frame(self) -> OutFrame | None:
        """The oldest frame still to write (with one sendmsg), or None."""
        return self._outbox.pop(0) if self._outbox else None

    def _queue(self, cmd: str, fields: dict[str, Any], fds: tuple[int, ...]) -> int:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        given = {key: value for key, value in fields.items() if value is not None}
        self._outbox.append(OutFrame(framing.encode({"cmd": cmd, "seq": seq, **given}).line, fds))
        self._pending[seq] = cmd
        return seq

    def _hello_sent(self) -> bool:
        return self.granted is not None or "HELLO" in self._pending.values()

    # --- what arrived ---------------------------------------------------------------------
    def receive_data(self, data: bytes, fds: list[OwnedFd], truncated: bool = False) -> None:
        """Feed one read: ``b""`` is the end of the stream. Raises ConnectionBroken."""
        if truncated or not data:
            close_all(fds)
            why = "fds truncated (MSG_CTRUNC)" if truncated else "luod closed the connection"
            self.fail(ConnectionBroken(why))
        try:
            frames = self._reader.feed(data, fds)
        except LuodError as exc:
            self.fail(ConnectionBroken(f"bad stream from luod: {exc}"), exc)
        for index, frame in enumerate(frames):
            try:
                self._dispatch(frame)
            except LuodError as exc:
                for rest in frames[index:]:
                    close_all(rest.fds)
                self.fail(ConnectionBroken(f"bad message from luod: {exc}"), exc)

    def next_reply(self, seq: int) -> Reply | None:
        """The reply to ``seq`` once it arrived (then it is the caller's, fds included)."""
        return self._replies.pop(seq, None)

    def next_event(self, name: str | None = None) -> Event | None:
        """The oldest queued event (named ``name``: others stay queued), or None."""
        for event in self._events:
            if name is None or event.name == name.upper():
                self._events.remove(event)
                return event
        return None

    def abandon(self, seq: int) -> None:
        """Stop waiting for ``seq``: its reply, now or later, is dropped and its fds closed."""
        self._pending.pop(seq, None)
        reply = self._replies.pop(seq, None)
        if reply is not None:
            close_all(reply.fds)

    def _dispatch(self, frame: framing.Frame) -> None:
        message = framing.decode_server_message(frame)
        if "event" in message:
            data = {key: value for key, value in message.items() if key != "event"}
            self._events.append(Event(str(message["event"]).upper(), data, frame.fds))
            return
        seq = self._answered(message.get("seq"))
        cmd = None if seq is None else self._pending.pop(seq)
        if cmd == "HELLO":
            self._negotiated(message)
        if seq is None or seq == self._auto_hello:  # nobody waits for it
            close_all(frame.fds)
        else:
            self._replies[seq] = Reply(message, frame.fds)

    def _answered(self, seq: object) -> int | None:
        """The pending request a reply answers; without seq luod could not read ours."""
        if seq is None and self._pending:
            return next(iter(self._pending))
        return seq if isinstance(seq, int) and seq in self._pending else None

    def _negotiated(self, message: dict[str, Any]) -> None:
        granted = message.get("capabilities") if message.get("ok") is True else None
        names = granted if isinstance(granted, list) else []
        self.granted = frozenset(name for name in names if isinstance(name, str))

    # --- the connection's state -----------------------------------------------------------
    def check(self) -> None:
        """Raise ConnectionBroken once the connection failed or was closed."""
        if self.broken is not None:  # a fresh exception each time, with the first one's cause
            raise ConnectionBroken(*self.broken.args) from self.broken.__cause__

    def fail(self, error: ConnectionBroken, cause: BaseException | None = None) -> NoReturn:
        """Mark the connection unusable and raise; replies and events already queued stay."""
        self.mark_broken(error, cause)
        self.check()
        raise AssertionError("unreachable")

    def mark_broken(self, error: ConnectionBroken, cause: BaseException | None = None) -> None:
        """The stream can no longer be trusted (e.g. a frame was cut off half-way)."""
        if self.broken is None:
            error.__cause__ = cause
            self.broken = error
            self._reader.close()
            self._outbox.clear()

    def close(self) -> None:
        """Close every fd this object still holds; the connection counts as broken."""
        self._reader.close()
        for reply in self._replies.values():
            close_all(reply.fds)
        for event in self._events:
            event.close()
        self._replies.clear()
        self._events.clear()
        self._outbox.clear()
        self.broken = self.broken or ConnectionBroken("the client was closed")


def close_all(fds: Iterable[OwnedFd]) -> None:
    for fd in fds:
        fd.close()
