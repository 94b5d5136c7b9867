"""Session: the owner of one LUO session fd (docs/kernel.md §4.6–§4.9, §5)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from luod.kernel import uapi, validate
from luod.kernel.errors import LuoError
from luod.kernel.fd import OwnedFd, SupportsFileno

if TYPE_CHECKING:
    from luod.kernel.platform import Platform


class Session:
    """A LUO session fd and the ioctls on it.

    Closing the last reference to an *outgoing* session unpreserves every file in it; closing a
    *retrieved* one FINISHes it, destroying files not yet retrieved. So ``close()`` is explicit,
    never implicit (no ``__del__``), and ``detach()`` hands the fd to a new owner.
    """

    def __init__(self, platform: Platform, fd: OwnedFd, name: str) -> None:
        self._platform = platform
        self._fd = fd
        self._name = name

    @classmethod
    def adopt(cls, platform: Platform, fd: OwnedFd) -> Session:
        """Take ownership of an inherited fd after checking it is a LUO session (GET_NAME).

        On failure ``fd`` is left open and still owned by the caller.
        """
        try:
            name = _get_name(platform, fd.fileno())
        except OSError as exc:
            raise LuoError(
                exc.errno or errno.EINVAL,
                "GET_NAME",
                detail=f"fd {fd.fileno()} is not a LUO session",
                hint="an inherited fd (LISTEN_FDS, keeper) is not a LUO session fd",
            ) from exc
        return cls(platform, fd, name)

    @property
    def closed(self) -> bool:
        return self._fd.closed

    def fileno(self) -> int:
        if self._fd.closed:
            raise LuoError(errno.EBADF, "session", session=self._name)
        return self._fd.fileno()

    @property
    def name(self) -> str:
        """The session's name as the kernel reports it (GET_NAME)."""
        try:
            return _get_name(self._platform, self.fileno())
        except OSError as exc:
            raise _error(exc, "GET_NAME", self._name) from exc

    @property
    def known_name(self) -> str:
        """The name given at creation or adoption, without a syscall."""
        return self._name

    def preserve(self, fd: SupportsFileno, token: int) -> None:
        validate.token(token, "PRESERVE_FD", self._name)
        number = validate.fd_number(fd.fileno(), "PRESERVE_FD", self._name, token)
        arg = uapi.new_arg(uapi.SESSION_PRESERVE_FD, fd=number, token=token)
        self._call(uapi.SESSION_PRESERVE_FD, arg, "PRESERVE_FD", token)

    def retrieve(self, token: int) -> OwnedFd:
        validate.token(token, "RETRIEVE_FD", self._name)
        arg = uapi.new_arg(uapi.SESSION_RETRIEVE_FD, fd=-1, token=token)
        self._call(uapi.SESSION_RETRIEVE_FD, arg, "RETRIEVE_FD", token)
        return OwnedFd(int(arg.fd))

    def finish(self) -> None:
        arg = uapi.new_arg(uapi.SESSION_FINISH)
        self._call(uapi.SESSION_FINISH, arg, "FINISH", None)

    def close(self) -> None:
        """Close this reference (idempotent). See the class docstring for what that does."""
        self._fd.close()

    def detach(self) -> OwnedFd:
        """Hand the session fd to a new owner; this object is closed afterwards."""
        fd = OwnedFd(self._fd.detach())
        return fd

    def _call(self, cmd: int, arg: object, op: str, token: int | None) -> None:
        try:
            self._platform.ioctl(self.fileno(), cmd, uapi.ffi.buffer(arg))
        except LuoError:
            raise
        except OSError as exc:
            raise _error(exc, op, self._name, token) from exc

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd.fileno()}"
        return f"Session({self._name!r}, {state})"


def _get_name(platform: Platform, fd: int) -> str:
    arg = uapi.new_arg(uapi.SESSION_GET_NAME)
    platform.ioctl(fd, uapi.SESSION_GET_NAME, uapi.ffi.buffer(arg))
    return uapi.get_name(arg).decode(errors="surrogateescape")


def _error(exc: OSError, op: str, session: str, token: int | None = None) -> LuoError:
    return LuoError(exc.errno or errno.EIO, op, session=session, token=token)
