"""luod as a systemd service: READY=1 once the VMM socket serves, STATUS= with the phase,
WATCHDOG=1 pings, and sockets from socket activation (LISTEN_FDS, checked by family/type).

Everything is a no-op outside systemd (no $NOTIFY_SOCKET, no LISTEN_FDS).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import structlog

from luod.core import sdnotify
from luod.errors import LuodError

log = structlog.get_logger("luod.systemd")


def activated_socket(name: str) -> socket.socket | None:
    """The listening AF_UNIX stream socket systemd passed as FileDescriptorName=``name``."""
    for fdname, fd in sdnotify.listen_fds():
        if fdname != name or fd.closed:
            continue
        number = fd.detach()
        try:
            sock = socket.socket(fileno=number)
        except OSError as exc:
            os.close(number)
            raise LuodError(
                "bad-activated-socket",
                f"fd {name!r} from systemd is no socket",
                "luod.socket must be ListenStream= on a unix path",
            ) from exc
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not _listening(sock):
            kind = f"{sock.family.name}/{sock.type.name}"
            sock.close()
            raise LuodError(
                "bad-activated-socket",
                f"socket {name!r} from systemd is {kind}",
                "luod.socket must be ListenStream= on a unix path",
            )
        return sock
    return None


def _listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def ready(status: str) -> None:
    _send(f"READY=1\nSTATUS={status}")


def status(text: str) -> None:
    _send(f"STATUS={text}")


def stopping() -> None:
    _send("STOPPING=1\nSTATUS=stopping")


def on_event(message: dict[str, Any]) -> None:
    """Handler listener: mirror update phases into the unit's STATUS=."""
    if message.get("event") == "PHASE":
        status(f"update {message['to']}: {message.get('reason', '')}"[:200])


def watchdog_interval() -> float | None:
    """Half of WatchdogSec=, when systemd watches this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", str(os.getpid()))
    if not usec.isdigit() or int(usec) == 0 or pid != str(os.getpid()):
        return None
    return int(usec) / 2e6


async def watchdog(interval: float) -> None:
    """WATCHDOG=1 from the event loop itself: a wedged loop stops the pings."""
    while True:
        _send("WATCHDOG=1")
        await asyncio.sleep(interval)


def _send(state: str) -> None:
    try:
        sdnotify.notify(state)
    except OSError as exc:
        log.warning("sd-notify-failed", error=str(exc))
