"""The kept retrieve helper, luod's side: RETRIEVE_FD charged to a VMM's cgroup without a fork of
luod for each RECLAIM (docs/kernel.md §6.4).

A VMM in its own cgroup (each ``luod-qemu@`` unit) must get its memory charged there, so the
retrieve runs in a process that enters that cgroup. A fork of luod did it for each RECLAIM: 1.4
ms on a host for a luod of 21 MB, 7 ms under TCG, copy-on-write faults after. luod now starts
``luod.kernel.retriever_helper`` at the first such RECLAIM (that one still forks) and sends it
the next ones; it enters the VMM's cgroup, retrieves, hands the fds back and returns to luod's.
While it starts, and after it failed, luod forks as before: nothing waits for the helper.
Once the update ends no RECLAIM is due until the next live update, and the helper leaves
(``retire``): an idle host does not keep its 11 MB. A RECLAIM after that starts one again.

After a live update, where luod runs in a cgroup of its own (a service manager's unit, whose
VMMs are units of their own), luod.start forks the helper before luod's imports
(``begin_early``), so that it is ready by the first RECLAIM and none of them forks luod. That
fork copies a process of a few MB that has one thread, and starts no interpreter: spawning one
cost 0.3-1.2 s of luod's start in the systemd guest, more than the forks it saved at 3 VMs.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, Protocol

from luod.childenv import child_env
from luod.fdpass import pack_rights, room, unpack_rights
from luod.kernel import charged, uapi, validate
from luod.kernel.errors import LuoError
from luod.kernel.fd import OwnedFd
from luod.kernel.session import Session

REPLY_TIMEOUT: Final = 60.0
"""Seconds a request may take (RETRIEVE_FD is linear in size, docs/kernel.md §6.2); then the
helper counts as lost, is killed, and luod forks for the request instead."""
STARTS: Final = 3
"""Helpers that may fail in luod's life (not start, or be lost): after that many, luod only
forks. A helper retired at an update's end (``ChargedRetriever.retire``) did not fail."""
HELPER_FLAGS: Final = ("-S",)  # no site: standard library and luod.fdpass (PYTHONPATH below)


class Log(Protocol):
    """Where the retriever says what it did: luod's logger, given by the daemon (the kernel
    layer imports no logging of its own)."""

    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...


class Process(Protocol):
    """What a Helper uses of its process: a ``subprocess.Popen`` or a ``ForkedProcess``."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


class HelperLost(Exception):
    """The helper did not answer as it should (gone, silent, garbled): fork instead."""


class Helper:
    """One kept helper process and luod's end of its socket (the owner of both)."""

    def __init__(self, process: Process, channel: socket.socket) -> None:
        self.process = process
        self.channel = channel
        self.ready = False

    @classmethod
    def fork(cls, home: str | None = None) -> Helper:
        """A helper forked from this process, which must have one thread (luod's start, before
        its imports): the child closes every fd but its end of the socket and serves, with
        the helper's code imported here first, so that it imports nothing. ``home`` as for
        ``start``."""
        from luod.kernel import retriever_helper

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except BaseException:
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            _serve_forked(retriever_helper.main, retriever_helper.write, theirs.fileno(), home)
        theirs.close()
        return cls(ForkedProcess(pid), ours)

    @classmethod
    def start(cls, home: str | None = None) -> Helper:
        """Spawn a helper; ``home``: the cgroup.procs it returns to after each request
        (default: its own cgroup's, which is luod's)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = child_env()
        command = [sys.executable, *HELPER_FLAGS, "-m", "luod.kernel.retriever_helper"]
        command += [str(theirs.fileno()), *([home] if home else [])]
        try:
            process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return cls(process, ours)

    def poll_ready(self) -> bool:
        """Whether the helper said ``ready`` (without waiting for it)."""
        if not self.ready:
            try:
                data = self.channel.recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            except OSError as exc:
                raise HelperLost(str(exc)) from exc
            if not data.startswith(b"ready "):
                raise HelperLost(f"the helper said {data[:32]!r}, not ready")
            self.ready = True
        return True

    def retrieve(self, session: Session, tokens: Sequence[int], procs: Path) -> list[OwnedFd]:
        request = {"procs": str(procs), "cmd": uapi.SESSION_RETRIEVE_FD, "fd_at": FD_AT}
        request["args"] = [_argument(session, token) for token in tokens]
        try:
            self.channel.sendmsg([json.dumps(request).encode()], pack_rights([session.fileno()]))
            self.channel.settimeout(REPLY_TIMEOUT)
            try:
                data, ancillary, flags, _ = self.channel.recvmsg(
                    64, room(len(tokens)), socket.MSG_CMSG_CLOEXEC
                )
            finally:
                self.channel.settimeout(None)
        except OSError as exc:  # the helper is gone, or silent past the timeout
            raise HelperLost(str(exc)) from exc
        fds = [OwnedFd(n) for n in unpack_rights(ancillary)]
        if data == b"ok" and len(fds) == len(tokens) and not flags & socket.MSG_CTRUNC:
            return fds
        for fd in fds:
            fd.close()
        if data.startswith(b"err ") and data[4:].isdigit():
            code = int(data[4:])
            raise LuoError(code, "RETRIEVE_FD", session=session.known_name, token=tokens[0])
        raise HelperLost(f"the helper answered {data[:32]!r} with {len(fds)} fds")

    def close(self) -> None:
        """luod's end closed (the helper leaves at that), the process reaped, killed if need be."""
        self.channel.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def begin_early() -> Helper | None:
    """A helper forked now (luod.start: after a live update, before luod's imports, while luod
    has one thread), when luod runs in a cgroup of its own: there its VMMs run in others (each
    a unit of the service manager), and each of their RECLAIMs would fork luod until a helper
    is up. None in the root cgroup (a bare init's: VMMs are most likely beside luod, served in
    place), or when the fork failed (the first RECLAIM from another cgroup starts one, as
    without this). Should luod have another thread by then, the helper is spawned instead (a
    fork copies no thread but its own: a lock another one held would stay held)."""
    if charged.cgroup_of(os.getpid()) in (None, "/"):
        return None
    try:
        return Helper.fork() if threading.active_count() == 1 else Helper.start()
    except (OSError, subprocess.SubprocessError):
        return None


FORKED_NAME: Final = "luod-retriever"
"""The forked helper's name (``comm``: ps, top, the journal's ``_COMM``); its command line is
still luod's."""


def _serve_forked(
    serve: Callable[[list[str]], int],
    write: Callable[[str, bytes], None],
    channel: int,
    home: str | None,
) -> NoReturn:
    """The forked child: nothing of luod's but the channel, stdin and stdout on /dev/null,
    stderr kept (the journal), Python's own signal handling back to the defaults; then the
    helper's loop, and out without running anything of luod's on the way."""
    code = 1
    try:
        os.closerange(3, channel)
        os.closerange(channel + 1, os.sysconf("SC_OPEN_MAX"))
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            write("/proc/self/comm", FORKED_NAME.encode())
        code = serve([FORKED_NAME, str(channel), *([home] if home else [])])
    finally:
        os._exit(code)


class ForkedProcess:
    """What a Helper uses of ``subprocess.Popen``, for a helper luod forked (no exec)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            reaped, status = os.waitpid(self.pid, os.WNOHANG)
            if reaped:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status; ``subprocess.TimeoutExpired`` past ``timeout`` seconds."""
        if self.poll() is None:
            pidfd = os.pidfd_open(self.pid)
            try:
                exited = select.select([pidfd], [], [], timeout)[0]
            finally:
                os.close(pidfd)
            if not exited:
                raise subprocess.TimeoutExpired(f"{FORKED_NAME} {self.pid}", timeout or 0)
        returncode = self.poll()
        assert returncode is not None  # the pidfd is readable once it exited
        return returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


FD_AT: Final = int(uapi.ffi.offsetof("struct liveupdate_session_retrieve_fd", "fd"))


def _argument(session: Session, token: int) -> str:
    validate.token(token, "RETRIEVE_FD", session.known_name)
    arg = uapi.new_arg(uapi.SESSION_RETRIEVE_FD, fd=-1, token=token)
    return bytes(uapi.ffi.buffer(arg)).hex()


class ChargedRetriever:
    """The registry's retriever on the real kernel: in place when it may (luod.kernel.charged),
    else through the kept helper once it is ready, else a fork. Owns the helper, ``begun`` too
    (``begin_early``'s)."""

    def __init__(
        self, log: Log, start: Callable[[], Helper] = Helper.start, begun: Helper | None = None
    ) -> None:
        self.log = log
        self._start = start
        self._helper = begun
        self._failures = 0  # helpers that did not start or were lost (at most STARTS)
        self._lock = threading.Lock()  # one request at a time (the registry's lock holds too)

    def __call__(
        self, session: Session, tokens: Sequence[int], cgroup: str | None
    ) -> list[OwnedFd]:
        if charged.in_place(cgroup):
            return [session.retrieve(token) for token in tokens]
        assert cgroup is not None
        with self._lock:
            began = time.perf_counter()
            helper = self._ready()
            if helper is not None:
                try:
                    fds = helper.retrieve(session, tokens, charged.procs_of(cgroup))
                except HelperLost as exc:
                    self._lose(str(exc))
                else:
                    self._served(cgroup, "helper", began)
                    return fds
            fds = charged.retrieve_forked(session, tokens, cgroup)
            self._served(cgroup, "fork", began)
            return fds

    def close(self) -> None:
        with self._lock:
            if self._helper is not None:
                self._helper.close()
                self._helper = None

    def retire(self, why: str) -> int | None:
        """No RECLAIM is due (the update ended): the helper, if any, leaves; the next RECLAIM
        from another cgroup starts one again. Its pid, or None. It may wait for the helper's
        exit (two seconds at most): call it off luod's event loop."""
        with self._lock:
            helper, self._helper = self._helper, None
        if helper is None:
            return None
        home = charged.cgroup_of(helper.process.pid)  # luod's: it goes back after each request
        helper.close()
        self.log.info("retriever-retired", pid=helper.process.pid, cgroup=home, why=why)
        return helper.process.pid

    def _ready(self) -> Helper | None:
        """The helper if it is ready; else None (fork), after starting one if there is none."""
        if self._helper is None:
            if self._failures < STARTS:
                try:
                    self._helper = self._start()
                except (OSError, subprocess.SubprocessError) as exc:
                    self._failures += 1
                    left = STARTS - self._failures
                    self.log.warning(
                        "retriever-start-failed", error=str(exc), starts_left=left, hint=_HINT
                    )
            return None
        if self._helper.process.poll() is not None:
            self._lose(f"the helper exited ({self._helper.process.returncode})")
            return None
        try:
            return self._helper if self._helper.poll_ready() else None
        except HelperLost as exc:
            self._lose(str(exc))
            return None

    def _lose(self, why: str) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            with contextlib.suppress(OSError):
                helper.process.kill()
            helper.close()
        self._failures += 1
        left = STARTS - self._failures
        self.log.warning("retriever-lost", error=why, starts_left=left, hint=_HINT)

    def _served(self, cgroup: str, via: str, began: float) -> None:
        ms = round((time.perf_counter() - began) * 1e3, 3)
        self.log.info("retrieved-in-cgroup", cgroup=cgroup, via=via, ms=ms)


_HINT = "luod forks a helper for each RECLAIM from another cgroup meanwhile: slower, not wrong"
