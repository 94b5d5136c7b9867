"""A blocking QMP client: QEMU's monitor protocol, JSON lines over a unix socket.

Hand-written (about a hundred lines) rather than ``qemu.qmp`` from PyPI: luod ships as a Debian
package and Debian has no package of ``qemu.qmp``; luod-qemu needs four things of QMP, all
here: the greeting and ``qmp_capabilities``, commands matched to replies by ``id`` (a reply that
comes after its command timed out is dropped, so the stream stays usable), events queued until
asked for, and one fd passed with a command (``SCM_RIGHTS``, for ``getfd``).
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque
from typing import Any

from luod.qemu.errors import QemuAdapterError

MAX_LINE = 16 << 20  # QMP replies are small; a bigger line means the stream is broken


class Qmp:
    """One QMP connection on a connected stream socket, after the capabilities handshake."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self.timeout = timeout
        self._buffer = b""
        self._events: deque[dict[str, Any]] = deque()
        self._next_id = 0
        self.greeting: dict[str, Any] = {}

    @classmethod
    def handshake(cls, sock: socket.socket, timeout: float) -> Qmp:
        """Read QEMU's greeting and leave capabilities negotiation mode."""
        qmp = cls(sock, timeout)
        try:
            qmp.greeting = qmp._message(time.monotonic() + timeout, "the QMP greeting")
            qmp.execute("qmp_capabilities")
        except BaseException:
            qmp.close()
            raise
        return qmp

    @property
    def version(self) -> tuple[int, int, int]:
        qemu = self.greeting.get("QMP", {}).get("version", {}).get("qemu", {})
        return (qemu.get("major", 0), qemu.get("minor", 0), qemu.get("micro", 0))

    def execute(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        *,
        fd: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run ``command`` and return its ``return`` value; ``fd`` travels with it."""
        self._next_id += 1
        tag = f"luod-qemu-{self._next_id}"
        line = json.dumps({"execute": command, "arguments": arguments or {}, "id": tag})
        self._send(line.encode() + b"\n", fd, command)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = self._message(deadline, command)
            if "event" in message:
                self._events.append(message)
            elif message.get("id") == tag:
                return _result(command, message)
            # else: the late reply to a command that timed out earlier

    def wait_event(self, name: str, timeout: float, **data: Any) -> dict[str, Any]:
        """The next event ``name`` whose data has the given values (others stay queued)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event["event"] == name and _matches(event.get("data", {}), data):
                    self._events.remove(event)
                    return event
            message = self._message(deadline, f"event {name}")
            if "event" in message:
                self._events.append(message)

    def close(self) -> None:
        self._sock.close()

    def _send(self, data: bytes, fd: int | None, what: str) -> None:
        try:
            self._sock.settimeout(self.timeout)
            if fd is None:
                self._sock.sendall(data)
            else:
                sent = socket.send_fds(self._sock, [data], [fd])
                if sent < len(data):  # the rest without the fd again
                    self._sock.sendall(data[sent:])
        except TimeoutError as exc:
            raise _timeout(what, self.timeout) from exc
        except OSError as exc:
            raise _closed(what, exc) from exc

    def _message(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timeout(what, self.timeout)
            try:
                self._sock.settimeout(left)
                chunk = self._sock.recv(65536)
            except TimeoutError as exc:
                raise _timeout(what, self.timeout) from exc
            except OSError as exc:
                raise _closed(what, exc) from exc
            if not chunk:
                raise _closed(what, None)
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE:
                raise _closed(what, ValueError("a QMP line longer than 16 MiB"))
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise _closed(what, exc) from exc
        if not isinstance(message, dict):
            raise _closed(what, ValueError(f"not a JSON object: {line[:80]!r}"))
        return message


def _result(command: str, message: dict[str, Any]) -> Any:
    if "error" in message:
        error = message["error"]
        raise QemuAdapterError(
            "qmp-error",
            f"QEMU refused {command}: {error.get('desc', error)}",
            f"QMP error class {error.get('class', '?')}",
        )
    return message.get("return")


def _matches(data: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(
        data.get(key) in (value if isinstance(value, tuple) else (value,))
        for key, value in wanted.items()
    )


def _timeout(what: str, seconds: float) -> QemuAdapterError:
    return QemuAdapterError(
        "qmp-timeout",
        f"QEMU did not answer {what} within {seconds:g} s",
        "QEMU is hung or overloaded (a stopped process?); --qmp-timeout sets the limit",
    )


def _closed(what: str, cause: BaseException | None) -> QemuAdapterError:
    why = f": {cause}" if cause else ""
    return QemuAdapterError(
        "qmp-closed",
        f"the QMP connection to QEMU broke during {what}{why}",
        "QEMU probably exited: see its output and exit status",
    )
