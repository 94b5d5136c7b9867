"""LuodError: what luod answers when a request cannot be served.

Carries a stable ``code`` (shared by the VMM socket and REST), a message, an operator hint and,
when the kernel said no, the errno. Kernel failures keep their LuoError code (``luo-ebusy``...).
"""

from __future__ import annotations

import errno as E
from typing import Any

from luod.kernel import LuoError


class LuodError(Exception):
    def __init__(self, code: str, message: str, hint: str = "", errno: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.errno = errno
        self.seq: int | None = None  # the request it answers, when known
        self.cmd: str | None = None

    @classmethod
    def from_luo(cls, exc: LuoError) -> LuodError:
        return cls(exc.code, str(exc).split(" — hint:", 1)[0], exc.hint, exc.errno)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message, "hint": self.hint}
        if self.errno is not None:
            data["errno"] = self.errno
            data["errno_name"] = E.errorcode.get(self.errno, str(self.errno))
        return data

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        return f"{text} — hint: {self.hint}" if self.hint else text
