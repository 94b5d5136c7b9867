"""The sd_notify protocol and the fds systemd passes in (``LISTEN_FDS``), without libsystemd.

``notify()`` sends one datagram to ``$NOTIFY_SOCKET`` (a path or an abstract ``@name``), with
fds in SCM_RIGHTS. ``listen_fds()`` takes the fds systemd passed at start-up exactly once for
the whole process: socket activation and the fd-store custody both read from it.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import socket
import stat
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Final

from luod.kernel.fd import OwnedFd, SupportsFileno

SD_LISTEN_FDS_START: Final = 3
SEND_TIMEOUT: Final = 5.0
"""systemd drains its notify socket quickly; a longer block means PID 1 is wedged."""

VMM_SOCKET: Final = "liveupdate"
"""luod.socket's FileDescriptorName=: the VMM socket, when systemd passes it."""
_LISTEN_VARS: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_listen_lock = threading.Lock()
_listen_cache: list[tuple[str, OwnedFd]] | None = None


def notify_address(environ: Mapping[str, str] = os.environ) -> str | None:
    """The socket address in ``$NOTIFY_SOCKET`` (abstract names start with NUL), or None."""
    value = environ.get("NOTIFY_SOCKET")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET={value!r}: only paths and @abstract names are supported")


def fdstore_max(environ: Mapping[str, str] = os.environ) -> int:
    """``$FDSTORE`` (systemd 254+ exports FileDescriptorStoreMax= there), 0 when unset/invalid."""
    try:
        return max(int(environ.get("FDSTORE", "0")), 0)
    except ValueError:
        return 0


def notify(state: str, fds: Sequence[SupportsFileno] = ()) -> bool:
    """Send ``state`` (``READY=1``, ``FDSTORE=1\\nFDNAME=x``...) to the service manager.

    Returns False when there is no ``$NOTIFY_SOCKET`` (not run by systemd); raises OSError when
    the datagram could not be sent, in which case the fds were not passed.
    """
    address = notify_address()
    if address is None:
        return False
    rights = array.array("i", [fd.fileno() for fd in fds])
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights.tobytes())] if fds else []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(SEND_TIMEOUT)
        sock.sendmsg([state.encode()], ancillary, socket.MSG_NOSIGNAL, address)
    return True


def notify_barrier(timeout: float = SEND_TIMEOUT) -> bool:
    """Wait until the manager has processed every message sent before (``BARRIER=1``).

    systemd closes the pipe end passed with the barrier once it got there; we wait for POLLHUP.
    Returns False without a manager, raises TimeoutError if it does not answer in time.
    """
    reader, writer = (OwnedFd(fd) for fd in os.pipe2(os.O_CLOEXEC))
    with reader, writer:
        if not notify("BARRIER=1", [writer]):
            return False
        writer.close()  # only the manager's copy may keep the pipe open now
        poller = select.poll()
        poller.register(reader.fileno(), select.POLLHUP)
        if not poller.poll(timeout * 1000):
            raise TimeoutError(f"the service manager did not pass BARRIER=1 in {timeout}s")
    return True


def parse_listen_env(environ: Mapping[str, str], pid: int) -> list[str]:
    """Names of the fds passed to process ``pid`` (fd 3, 4, ...), [] when none are for it.

    Follows sd_listen_fds_with_names(): without a matching ``LISTEN_FDNAMES`` count every fd
    is called ``unknown``.
    """
    if environ.get("LISTEN_PID") != str(pid) or "LISTEN_FDS" not in environ:
        return []
    text = environ["LISTEN_FDS"]
    if not text.isdigit():
        raise ValueError(f"LISTEN_FDS={text!r} is not a count of fds")
    count = int(text)
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    if len(names) != count:
        names = ["unknown"] * count
    return names


READY_AT_EXEC: Final = "LUOD_READY_AT_EXEC"
"""yes (the default) or no: READY=1 at exec under socket activation (luod.start)."""
_SWITCH: Final = {"yes": True, "1": True, "true": True, "no": False, "0": False, "false": False}


def ready_at_exec(environ: Mapping[str, str] = os.environ) -> bool | None:
    """``$LUOD_READY_AT_EXEC``: True when unset; None when it is neither yes nor no."""
    return _SWITCH.get(environ.get(READY_AT_EXEC, "yes").strip().lower())


def passed_listener(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether systemd passed this process a listening unix stream socket called ``name``,
    looked at without taking the fds (``listen_fds()`` still takes them later)."""
    try:
        names = parse_listen_env(environ, os.getpid())
    except ValueError:
        return False
    if name not in names:
        return False
    try:
        probe = socket.socket(fileno=os.dup(SD_LISTEN_FDS_START + names.index(name)))
    except OSError:
        return False
    with probe:
        return is_unix_listener(probe)


def is_unix_listener(sock: socket.socket) -> bool:
    """A listening AF_UNIX stream socket: what luod.socket and luod-api.socket pass."""
    return (
        sock.family == socket.AF_UNIX
        and sock.type == socket.SOCK_STREAM
        and bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    )


def watchdog_usec(environ: Mapping[str, str] = os.environ) -> int | None:
    """WatchdogSec= in µs when systemd watches this process (``$WATCHDOG_USEC``), else None."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", str(os.getpid()))
    if not usec.isdigit() or int(usec) == 0 or pid != str(os.getpid()):
        return None
    return int(usec)


def listen_fds() -> list[tuple[str, OwnedFd]]:
    """The fds systemd passed in, by name, parsed once per process (later calls: the same).

    The OwnedFd objects are shared: a consumer that keeps one takes it over with ``detach()``,
    which other consumers then see as ``closed``. Marks them close-on-exec and removes the
    ``LISTEN_*`` variables so that children do not think the fds are theirs.
    """
    global _listen_cache
    with _listen_lock:
        if _listen_cache is None:
            _listen_cache = _take_listen_fds(os.environ, os.getpid())
        return list(_listen_cache)


def _take_listen_fds(environ: MutableMapping[str, str], pid: int) -> list[tuple[str, OwnedFd]]:
    names = parse_listen_env(environ, pid)
    for variable in _LISTEN_VARS:
        environ.pop(variable, None)
    taken = []
    for offset, name in enumerate(names):
        number = SD_LISTEN_FDS_START + offset
        try:
            flags = fcntl.fcntl(number, fcntl.F_GETFD)
        except OSError:
            continue  # announced but not open: nothing to own (a broken launcher, not systemd)
        fcntl.fcntl(number, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        taken.append((name, OwnedFd(number)))
    return taken


def is_socket(fd: SupportsFileno) -> bool:
    """Socket-activation sockets are for the daemon's servers, never for custody."""
    return stat.S_ISSOCK(os.fstat(fd.fileno()).st_mode)
