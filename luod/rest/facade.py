"""What the REST app needs from luod, and nothing more: the app is a thin HTTP skin over this.

The daemon implements it with ``luod.rest.adapter.DaemonFacade`` (over the handler, the update
driver and the registry); tests may implement it however they like. Every method either returns
a response model or raises ``LuodError`` with the same code the VMM socket would send.
"""

from __future__ import annotations

from typing import Any, Protocol

from luod.errors import LuodError
from luod.rest import models


class EventStream(Protocol):
    """One subscriber's events (PHASE, VM_PROGRESS, UPDATE_END dicts, as on the VMM socket).

    Registered when ``subscribe()`` returns, so nothing published after that is missed;
    ``close()`` unregisters (safe to call twice)."""

    def __aiter__(self) -> EventStream: ...

    async def __anext__(self) -> dict[str, Any]:
        """The next event; StopAsyncIteration once closed (or dropped for falling behind)."""
        ...

    def close(self) -> None: ...


class RestFacade(Protocol):
    def version(self) -> str: ...

    def status(self) -> models.Status: ...

    def preflight(self, request: models.PreflightRequest) -> models.PreflightResult:
        """Run the preflight checks; start nothing."""
        ...

    def vms(self) -> models.VmList: ...

    def vm(self, vm_id: str) -> models.Vm:
        """Raises LuodError ``unknown-vm``."""
        ...

    def start_update(
        self, request: models.UpdateStartRequest, uid: int | None
    ) -> models.UpdateRecord:
        """Start an update in the background. ``uid``: the caller's, from SO_PEERCRED on the
        unix socket (None over TCP, where the bearer token stands for root). Raises
        ``PreflightRefused``, LuodError ``update-running`` or ``not-allowed``."""
        ...

    def update(self) -> models.UpdateState:
        """The current phase, and the running (or last) update."""
        ...

    async def abort(self, reason: str | None, uid: int | None) -> models.AbortResult:
        """Abort the running update and wait until every VM resumed. Raises ``wrong-state``."""
        ...

    def history(self) -> models.History: ...

    def subscribe(self) -> EventStream: ...


class PreflightRefused(LuodError):
    """``preflight-failed``, with the checks (the REST problem carries them)."""

    def __init__(self, error: LuodError, checks: list[models.Check]) -> None:
        super().__init__(error.code, error.message, error.hint, error.errno)
        self.checks = checks
