"""LuoDevice: /dev/liveupdate, opened per operation (docs/architecture.md §1, docs/kernel.md §3).

Sessions do not depend on the device fd, so luod opens it only for the few calls that need it
and closes it again: systemd 261+ opens it briefly at boot and in systemd-shutdown. On EBUSY
the open is retried with a bounded backoff; if it stays busy the error names the holder.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from luod.kernel import uapi, validate
from luod.kernel.errors import LuoError, hint_for
from luod.kernel.fd import OwnedFd
from luod.kernel.session import Session

if TYPE_CHECKING:
    from luod.kernel.platform import Platform

DEFAULT_PATH: Final = "/dev/liveupdate"
DEFAULT_BACKOFF: Final = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
"""Seconds slept between EBUSY retries: about 0.6 s in all, then the holder is named."""


class OpenDevice:
    """The device while it is open: the two device ioctls."""

    def __init__(self, platform: Platform, fd: OwnedFd) -> None:
        self._platform = platform
        self._fd = fd

    def fileno(self) -> int:
        return self._fd.fileno()

    def create_session(self, name: str) -> Session:
        raw = validate.session_name(name, "CREATE_SESSION")
        return self._session_ioctl(uapi.CREATE_SESSION, raw, "CREATE_SESSION", name)

    def retrieve_session(self, name: str) -> Session:
        raw = validate.session_name(name, "RETRIEVE_SESSION")
        return self._session_ioctl(uapi.RETRIEVE_SESSION, raw, "RETRIEVE_SESSION", name)

    def ioctl(self, cmd: int, buf: bytearray) -> None:
        """A raw ioctl on the device (contract tests of the argument checks)."""
        self._platform.ioctl(self._fd.fileno(), cmd, buf)

    def _session_ioctl(self, cmd: int, raw: bytes, op: str, name: str) -> Session:
        arg = uapi.new_arg(cmd, fd=-1)
        uapi.set_name(arg, raw)
        try:
            self._platform.ioctl(self._fd.fileno(), cmd, uapi.ffi.buffer(arg))
        except OSError as exc:
            raise LuoError(exc.errno or errno.EIO, op, session=name) from exc
        return Session(self._platform, OwnedFd(int(arg.fd)), name)


class LuoDevice:
    def __init__(
        self,
        platform: Platform,
        path: str = DEFAULT_PATH,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.platform = platform
        self.path = path
        self._backoff = tuple(backoff)
        self._sleep = sleep

    @contextmanager
    def open(self) -> Iterator[OpenDevice]:
        """Open the device for a batch of calls; it is closed when the block ends."""
        fd = self._open_with_retry()
        try:
            yield OpenDevice(self.platform, fd)
        finally:
            fd.close()

    def create_session(self, name: str) -> Session:
        with self.open() as device:
            return device.create_session(name)

    def retrieve_session(self, name: str) -> Session:
        with self.open() as device:
            return device.retrieve_session(name)

    def adopt_session(self, fd: OwnedFd) -> Session:
        """Own an inherited session fd once GET_NAME proved it is one."""
        return Session.adopt(self.platform, fd)

    def _open_with_retry(self) -> OwnedFd:
        for delay in (*self._backoff, None):
            try:
                return self.platform.open_device(self.path)
            except OSError as exc:
                if exc.errno != errno.EBUSY or delay is None:
                    raise self._open_error(exc) from exc
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _open_error(self, exc: OSError) -> LuoError:
        code = exc.errno or errno.EIO
        hint = hint_for("open", code)
        if code == errno.EBUSY:
            holders = self.platform.device_holders(self.path)
            names = ", ".join(str(h) for h in holders) or "a process that could not be found"
            hint = f"{self.path} is held by {names}; luod retried for {sum(self._backoff):.2f} s"
        return LuoError(code, "open", hint=hint, detail=self.path)
