"""Argument checks done before a syscall, failing with the errno the kernel would give."""

from __future__ import annotations

import errno
from typing import Final

from luod.kernel.errors import LuoError
from luod.kernel.uapi import NAME_LENGTH

U64_MAX: Final = (1 << 64) - 1


def session_name(name: str | bytes, op: str) -> bytes:
    """Encode ``name`` for CREATE/RETRIEVE_SESSION, rejecting what cannot be a session name.

    CREATE_SESSION answers EINVAL for an empty or 64-byte name; RETRIEVE_SESSION does not
    validate and just finds nothing (ENOENT). A NUL inside would silently cut the name.
    """
    raw = name.encode() if isinstance(name, str) else bytes(name)
    code = errno.EINVAL if op == "CREATE_SESSION" else errno.ENOENT
    if not raw or len(raw) >= NAME_LENGTH:
        raise LuoError(code, op, session=repr(name), detail=f"name is {len(raw)} bytes")
    if b"\0" in raw:
        raise LuoError(code, op, session=repr(name), detail="NUL byte inside the name")
    return raw


def token(value: int, op: str, session: str | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
        raise LuoError(
            errno.EINVAL,
            op,
            session=session,
            detail=f"token {value!r} is not a u64",
            hint="tokens are unsigned 64-bit integers",
        )
    return value


def fd_number(value: int, op: str, session: str | None, token: int | None) -> int:
    if value < 0:
        raise LuoError(errno.EBADF, op, session=session, token=token, detail=f"fd {value}")
    return value
