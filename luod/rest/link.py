"""The link between luod and its REST worker: one unix stream socket, JSON lines both ways.

luod (``LinkServer``, luod.rest.serving) answers the worker's calls on its main event loop with
luod.rest.port.DaemonPort, and sends every update event down the same socket. The worker
(``LinkClient``, luod.rest.remote) asks and listens. Frames, one JSON object a line:

- worker → luod: ``{"id": N, "call": NAME, "args": [...]}``;
- luod → worker: ``{"id": N, "ok": VALUE}`` or ``{"id": N, "error": {code, message, hint,
  errno[, checks]}}``; ``{"event": EVENT, "seq": N}``; first of all ``{"hello": {...}}``, what
  the worker serves (luod.rest.worker).

luod numbers every event (``seq``), and sends the worker only what it uses: the events that
change its snapshots (``ALWAYS``) at all times, the rest (a VM's progress: one per VM and step,
a hundred in a freeze of 100 VMs) only while a client watches the event stream. The worker
says so with ``watch`` (answered with the update's state, in the same step of luod's loop that
turns the forwarding on) and ``unwatch`` (when its last subscriber left; ignored if a ``watch``
was answered since, which the worker had not yet seen). A gap in ``seq`` tells the worker that
events were left out: a client cannot resume across it (luod.rest.events.EventHub.gap).

While the VMs are paused (phases ``PAUSED``), luod holds the events back for up to ``HOLD``:
the worker is not woken in the middle of a freeze (it would take a CPU, and its calls luod's
loop, from the READYs), a freeze that takes longer still shows its progress in batches, and an
abort or a stop sends everything at once. On a kexec that succeeds, what was held is lost with
the worker; the next luod's record has it all (``GET /v1/update``).

One socket keeps order: a read answered in one step of luod's loop (luod.rest.port) arrives
after every event published before it and before every event after it. The worker takes its
reply and subscribes to the events in the same step of its own loop (``LinkClient.call``'s
``then``), so a ``GET /v1/events`` client gets the state and then every event after it, none
lost and none twice.

No pydantic or HTTP module here: luod's side imports this.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import structlog

from luod.errors import LuodError

log = structlog.get_logger("luod.rest")
CHANGES: Final = frozenset({"PHASE", "UPDATE_END"})
"""The events that make every snapshot of the worker stale (luod.rest.remote)."""
ALWAYS: Final = CHANGES | {"SHUTDOWN"}
PAUSED: Final = frozenset({"freezing", "frozen", "rebooting"})
HOLD: Final = 0.05
EXIT_DISABLED: Final = 78
"""The worker's exit status (EX_CONFIG) when its configuration or its stack is unusable: it
said why (``rest-disabled``), and luod does not start it again."""
MAX_FRAME: Final = 64 << 20
"""A VM list of 1000 VMs with their files and NICs is a few MB; past this the peer is broken."""
MAX_BUFFERED: Final = 64 << 20
"""luod stops writing to a worker that stopped reading (its events would pile up in luod)."""


class Refused(LuodError):
    """``preflight-failed``, with the checks (``Check.to_dict()`` each) the REST problem lists."""

    def __init__(self, error: LuodError, checks: list[dict[str, Any]]) -> None:
        super().__init__(error.code, error.message, error.hint, error.errno)
        self.checks = checks


class LinkBroken(LuodError):
    def __init__(self, message: str) -> None:
        super().__init__(
            "rest-link", message, "luod restarts its REST worker; see luod's log for why"
        )


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise LinkBroken(f"a frame that is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise LinkBroken(f"a frame that is not an object: {type(message).__name__}")
    return message


def error_of(exc: LuodError) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": exc.code,
        "message": exc.message,
        "hint": exc.hint,
        "errno": exc.errno,
    }
    if isinstance(exc, Refused):
        error["checks"] = exc.checks
    return error


def raised(error: Mapping[str, Any]) -> LuodError:
    """The exception an error frame stands for."""
    found = LuodError(
        str(error.get("code", "internal")),
        str(error.get("message", "")),
        str(error.get("hint", "")),
        error.get("errno") if isinstance(error.get("errno"), int) else None,
    )
    checks = error.get("checks")
    return Refused(found, list(checks)) if isinstance(checks, list) else found


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame; None at the end of the stream."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise LinkBroken("the stream ended in the middle of a frame") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise LinkBroken(f"a frame over {MAX_FRAME} bytes") from exc
    return decode(line)


class Port(Protocol):
    """What the server calls: luod.rest.port.DaemonPort."""

    def read(self, name: str) -> dict[str, Any]: ...


class LinkServer:
    """luod's end: answers calls with ``port``, whose methods named in ``calls`` may be asked
    (synchronous ones answer at once, coroutines in a task of their own), and sends events."""

    def __init__(self, writer: asyncio.StreamWriter, port: Port, calls: frozenset[str]) -> None:
        self.writer = writer
        self.port = port
        self.calls = calls
        self._tasks: set[asyncio.Task[None]] = set()
        self._events: list[dict[str, Any]] = []  # frames published since the last flush
        self._soon = False  # a flush is due in the loop's next step
        self._timer: asyncio.TimerHandle | None = None  # the flush of what is held
        self._holding = False  # the VMs are paused: events wait (HOLD at most)
        self._seq = 0  # events published so far
        self.watched = False  # a client of the worker watches the event stream
        self.watches = 0  # ``watch`` calls answered

    def hello(self, what: Mapping[str, Any]) -> None:
        self._send({"hello": dict(what)})

    def event(self, event: Mapping[str, Any]) -> None:
        """A listener on luod's event bus: never blocks, never raises into the update. Events
        are sent together once the loop's current step is done (one write for a burst), or
        after HOLD while the VMs are paused."""
        self._seq += 1
        kind = event.get("event")
        if kind == "PHASE":
            self._holding = event.get("to") in PAUSED
        if not self.watched and kind not in ALWAYS:
            return  # nobody watches: the gap in seq says so
        self._events.append({"event": dict(event), "seq": self._seq})
        loop = asyncio.get_running_loop()
        if self._holding and kind != "SHUTDOWN":
            if self._timer is None:
                self._timer = loop.call_later(HOLD, self._flush)
        elif not self._soon:
            self._soon = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._soon = False
        if not self._events:
            return
        frames, self._events = self._events, []
        with contextlib.suppress(LinkBroken, ConnectionError, RuntimeError):
            self._send_all(frames)

    def _watch(self) -> dict[str, Any]:
        """Every event from now on, and the update's state now (one step of the loop)."""
        self.watched, self.watches = True, self.watches + 1
        return {"state": self.port.read("update"), "watches": self.watches}

    def _unwatch(self, watches: int) -> bool:
        """Whether the forwarding stopped (not when a ``watch`` came since ``watches``)."""
        if watches == self.watches:
            self.watched = False
        return not self.watched

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """Until the worker closes its end; raises LinkBroken on a frame that makes no sense."""
        try:
            while (frame := await read_frame(reader)) is not None:
                self._answer(frame)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            for task in self._tasks:
                task.cancel()

    def _answer(self, frame: dict[str, Any]) -> None:
        call_id, name, args = frame.get("id"), frame.get("call"), frame.get("args", [])
        if not isinstance(call_id, int) or not isinstance(name, str) or not isinstance(args, list):
            raise LinkBroken(f"a call without an id, a name or its arguments: {str(frame)[:200]}")
        result: Any
        try:
            if name == "read":
                result = self.port.read(*args)
            elif name == "watch":
                result = self._watch()
            elif name == "unwatch":
                result = self._unwatch(*args)
            elif name in self.calls:
                result = getattr(self.port, name)(*args)
            else:
                raise LuodError("unknown-call", f"no call {name[:40]!r}", "")
        except Exception as exc:
            self._fail(call_id, name, exc)
            return
        if not inspect.isawaitable(result):
            self._reply(call_id, result)
            return
        task = asyncio.ensure_future(self._later(call_id, name, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, call_id: int, name: str, pending: Any) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._fail(call_id, name, exc)
        else:
            self._reply(call_id, result)

    def _reply(self, call_id: int, result: Any) -> None:
        if self._events:  # the answer comes after every event published before it
            self._flush()
        try:
            frame = encode({"id": call_id, "ok": result})
        except (TypeError, ValueError) as exc:  # a port bug: that call fails, the link holds
            self._fail(call_id, "reply", exc)
            return
        with contextlib.suppress(LinkBroken, ConnectionError, RuntimeError):
            self._write(frame)

    def _fail(self, call_id: int, name: str, exc: Exception) -> None:
        if self._events:
            self._flush()
        if isinstance(exc, LuodError):
            error = error_of(exc)
        else:  # a bug on luod's side: the REST caller gets a 500, luod goes on
            log.error("rest-call-failed", call=name, error=repr(exc)[:500], exc_info=exc)
            error = {"code": "internal", "message": f"{name} failed: {exc!r}"[:500], "hint": ""}
        with contextlib.suppress(LinkBroken, ConnectionError, RuntimeError):
            self._send({"id": call_id, "error": error})

    def _send(self, message: Mapping[str, Any]) -> None:
        self._send_all([message])

    def _send_all(self, messages: list[dict[str, Any]] | list[Mapping[str, Any]]) -> None:
        self._write(b"".join(encode(message) for message in messages))

    def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise LinkBroken("the worker's end is closed")
        if self.writer.transport.get_write_buffer_size() > MAX_BUFFERED:
            self.writer.close()
            raise LinkBroken(f"the worker left over {MAX_BUFFERED} bytes unread")
        self.writer.write(data)


class LinkClient:
    """The worker's end: ``call`` luod; every event goes to ``on_event`` as it arrives, with
    luod's number for it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[dict[str, Any], int | None], None],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], Callable[[Any], Any] | None]] = {}
        self.ended: LuodError | None = None

    async def call(self, name: str, *args: Any, then: Callable[[Any], Any] | None = None) -> Any:
        """luod's answer (``then(answer)`` if given, run as the answer arrives, before any
        event after it is handed to ``on_event``); raises the LuodError luod answered."""
        if self.ended is not None:
            raise self.ended
        if self.writer.is_closing():
            raise LinkBroken("the link to luod is closing")
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = (future, then)
        try:
            try:
                self.writer.write(encode({"id": call_id, "call": name, "args": list(args)}))
            except (ConnectionError, RuntimeError) as exc:  # luod's end went (a closed transport)
                raise LinkBroken(f"the link to luod is gone: {exc}") from exc
            return await future
        finally:
            self._pending.pop(call_id, None)

    async def run(self) -> None:
        """Read until luod closes the link (it stops, or it dies); every call still waiting
        then fails with ``rest-link``."""
        try:
            while (frame := await read_frame(self.reader)) is not None:
                self._dispatch(frame)
            self.ended = LinkBroken("luod closed the link")
        except LinkBroken as exc:
            self.ended = exc
            raise
        finally:
            ended = self.ended or LinkBroken("the link's reader stopped")
            for future, _ in self._pending.values():
                if not future.done():
                    future.set_exception(ended)
            self._pending.clear()

    def _dispatch(self, frame: dict[str, Any]) -> None:
        if "event" in frame:
            seq = frame.get("seq")
            self.on_event(frame["event"], seq if isinstance(seq, int) else None)
            return
        entry = self._pending.pop(frame.get("id", -1), None)
        if entry is None:
            return  # a caller that gave up (cancelled): its answer is dropped
        future, then = entry
        if future.done():
            return
        if "error" in frame:
            future.set_exception(raised(frame["error"]))
            return
        try:
            future.set_result(then(frame.get("ok")) if then else frame.get("ok"))
        except Exception as exc:
            future.set_exception(exc)
