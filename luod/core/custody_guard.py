"""``CustodyGuard``: custody that survives losing its custodian (a keeper killed with -9).

Every deposit and withdrawal goes through it. When the custodian is gone (LuodError
``custody-unavailable`` or ``custody-closed``) it logs that at error level, asks the custody for
a new custodian (``renew``: a new keeper) and hands it every session luod holds again (``held``:
the registry's sessions), then retries the deposit that failed. Until that succeeds the health
says so (``/v1/status``, ``/metrics``), and the failing request gets the error: the registry
rolls back what it began (no session left open that neither the manifest nor custody knows).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

import structlog

from luod.core.custodian import Custody
from luod.errors import LuodError
from luod.kernel import OwnedFd, SupportsFileno
from luod.values import Value

log = structlog.get_logger("luod.custody")
LOST: Final = frozenset({"custody-unavailable", "custody-closed"})
RETRY_FIRST: Final = 2.0
RETRY_MAX: Final = 60.0
"""While no custodian can be had, ``check`` tries again after 2, 4, 8 ... 60 s: the log says
so at error level each time, not every 2 s for hours."""


class _CustodyHealth(NamedTuple):
    kind: str
    healthy: bool
    renewals: int  # custodians started again after a loss, since luod started
    problem: str  # the last loss (empty while none happened)


class CustodyHealth(Value, _CustodyHealth):
    __slots__ = ()


class CustodyGuard:
    """Implements luod.core.custodian.Custody over ``custody``, renewing it when it is lost."""

    def __init__(self, custody: Custody, held: Callable[[], Mapping[str, SupportsFileno]]):
        self._custody = custody
        self._held = held
        self._healthy = True
        self._renewals = 0
        self._problem = ""
        self._retry_at = 0.0  # while renewing fails, check() retries with a growing pause
        self._pause = RETRY_FIRST

    @property
    def kind(self) -> str:
        return self._custody.kind

    @property
    def health(self) -> CustodyHealth:
        return CustodyHealth(self.kind, self._healthy, self._renewals, self._problem)

    def deposit(self, name: str, fd: SupportsFileno) -> None:
        try:
            self._custody.deposit(name, fd)
        except LuodError as exc:
            if exc.code not in LOST:
                raise
            self._renew(exc)  # hands over everything held; ``name`` may not be held yet
            self._custody.deposit(name, fd)

    def withdraw(self, name: str) -> None:
        try:
            self._custody.withdraw(name)
        except LuodError as exc:
            if exc.code not in LOST:
                raise
            self._renew(exc)  # the new custodian never had ``name``

    def recover(self) -> dict[str, OwnedFd]:
        return self._custody.recover()

    def close(self) -> None:
        self._custody.close()

    def check(self) -> CustodyHealth:
        """Is the custodian there? Renew it if not (luod's main loop asks every few seconds,
        so a keeper that died is replaced before a request or the kexec needs it)."""
        if not self._healthy and time.monotonic() < self._retry_at:
            return self.health
        try:
            self._custody.check()
            if not self._healthy:
                self._renew(LuodError("custody-unavailable", self._problem))
        except LuodError as exc:
            if exc.code not in LOST:
                raise
            with contextlib.suppress(LuodError):  # logged; a later check tries again
                self._renew(exc)
        return self.health

    def _renew(self, lost: LuodError) -> None:
        if self._healthy:
            log.error("custody-lost", kind=self.kind, code=lost.code, message=lost.message)
        self._healthy, self._problem = False, lost.message
        try:
            self._custody.renew()
            held = dict(self._held())
            for name, fd in held.items():
                self._custody.deposit(name, fd)
        except LuodError as exc:
            log.error(
                "custody-renew-failed",
                kind=self.kind,
                code=exc.code,
                message=exc.message,
                hint="luod alone holds the sessions now: do not stop luod; fix the custodian",
                retry_seconds=self._pause,
            )
            self._retry_at = time.monotonic() + self._pause
            self._pause = min(self._pause * 2, RETRY_MAX)
            raise
        self._healthy, self._pause = True, RETRY_FIRST
        self._renewals += 1
        log.warning("custody-renewed", kind=self.kind, sessions=len(held))
