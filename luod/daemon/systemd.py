"""luod as a systemd service: READY=1 once the VMM socket serves (with socket activation also at
exec: luod.start), STATUS= with the phase, WATCHDOG=1 pings, and sockets from socket
activation (LISTEN_FDS, checked by family/type).

Everything is a no-op outside systemd (no $NOTIFY_SOCKET, no LISTEN_FDS).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import structlog

from luod.core.kexec_mode import SystemdFacts
from luod.custody import sdnotify
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
        if not sdnotify.is_unix_listener(sock):
            kind = f"{sock.family.name}/{sock.type.name}"
            sock.close()
            raise LuodError(
                "bad-activated-socket",
                f"socket {name!r} from systemd is {kind}",
                "luod.socket must be ListenStream= on a unix path",
            )
        return sock
    return None


def ready(status: str) -> None:
    """Serving. Also gives WatchdogSec= back its configured length, which ``luod.start``
    stretched over the start when it said READY=1 at exec (socket activation)."""
    usec = sdnotify.watchdog_usec()
    _send(f"READY=1\nSTATUS={status}" + (f"\nWATCHDOG_USEC={usec}" if usec else ""))
    if sdnotify.ready_at_exec() is None:
        log.warning(
            "bad-setting",
            variable=sdnotify.READY_AT_EXEC,
            value=os.environ.get(sdnotify.READY_AT_EXEC),
            hint="yes or no; taken as yes (READY=1 at exec under socket activation)",
        )


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
    usec = sdnotify.watchdog_usec()
    return None if usec is None else usec / 2e6


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


# --- kexec through systemd ---------------------------------------------------------------------
SYSTEMCTL_TIMEOUT = 30.0


def kexec_facts(custody: str) -> SystemdFacts:
    """PID 1's systemd version and whether luod's own unit preserves its fd store across a
    kexec (``systemctl show``); a host without systemd gives version None. Without the fd store
    as custody nothing else matters, and systemctl is not asked."""
    if custody != "systemd" or not Path("/run/systemd/system").is_dir():  # sd_booted(3)
        return SystemdFacts(custody)
    version = _systemd_version(_systemctl_show("Version"))
    unit = own_unit()
    preserve = unit is not None and _systemctl_show("FileDescriptorStorePreserve", unit) == "yes"
    return SystemdFacts(custody, version, preserve, unit)


def own_unit(cgroup_file: Path = Path("/proc/self/cgroup")) -> str | None:
    """The service this process runs in, from its cgroup path (``0::/system.slice/x.service``)."""
    try:
        text = cgroup_file.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        for part in reversed(line.rpartition(":")[2].split("/")):
            if part.endswith(".service"):
                return part
    return None


def _systemd_version(text: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def _systemctl_show(prop: str, unit: str | None = None) -> str | None:
    argv = ["systemctl", "show", f"--property={prop}", "--value", *([unit] if unit else [])]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("systemctl-failed", argv=argv, error=str(exc))
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def start_kexec() -> None:
    """``systemctl kexec``: systemd stops the host in order and kexecs into the image luod
    loaded. Returns once systemd accepted the job; LuodError when it refused."""
    argv = ["systemctl", "kexec"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LuodError(
            "systemctl-kexec-failed",
            f"systemctl kexec: {exc}",
            "is systemctl installed and PID 1 responsive? kexec.mode = direct avoids systemd",
        ) from exc
    if done.returncode != 0:
        raise LuodError(
            "systemctl-kexec-failed",
            f"systemctl kexec exited {done.returncode}: {done.stderr.strip()[:300]}",
            "a shutdown inhibitor or a pending job may block it (systemd-inhibit --list)",
        )
