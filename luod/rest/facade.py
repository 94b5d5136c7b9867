"""What the REST app needs from luod, and nothing more: the app is a thin HTTP skin over this.

It is implemented over luod's port (luod.rest.port.DaemonPort) by luod.rest.port_facade.
PortFacade: in luod's REST worker across the link (luod.rest.remote.RemoteFacade, reads from
snapshots), and in one process for tests and benches (luod.rest.adapter.DaemonFacade).
Tests may implement it however they like. Every method either returns a response model or
raises ``LuodError`` with the same code the VMM socket would send; they are coroutines because
answering takes a call to the loop that owns luod's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from luod.errors import LuodError
from luod.rest import models
from luod.rest import qualification_models as qm
from luod.rest.history_reads import Ended


class EventStream(Protocol):
    """One subscriber's events: (event id, event) pairs, the events being PHASE, VM_PROGRESS,
    UPDATE_END dicts as on the VMM socket, and SHUTDOWN last when luod stops.

    Registered when ``watch()`` returns, so nothing published after that is missed;
    ``close()`` unregisters (safe to call twice)."""

    def __aiter__(self) -> EventStream: ...

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        """The next event; StopAsyncIteration once closed (or dropped for falling behind)."""
        ...

    def close(self) -> None: ...


class RestFacade(Protocol):
    def version(self) -> str: ...

    def sees_all(self, uid: int | None) -> bool:
        """May ``uid`` (None: the TCP token) see every owner's VMs, the events, the history?
        (luod.core.access; callable from any thread: the policy never changes.)"""
        ...

    async def status(self) -> models.Status: ...

    async def preflight(
        self, request: models.PreflightRequest, uid: int | None
    ) -> models.PreflightResult:
        """Run the preflight checks; start nothing. Root only (``uid`` as for
        ``start_update``): raises ``not-allowed``."""
        ...

    async def vms(self) -> models.VmList: ...

    async def vm(self, vm_id: str) -> models.Vm:
        """Raises LuodError ``unknown-vm``."""
        ...

    async def drop_vm(self, vm_id: str, force: bool, uid: int | None) -> models.DropResult:
        """Unpreserve and forget a VM whose VMM is gone (root; ``uid`` as ``start_update``).
        Raises ``unknown-vm``, ``not-allowed``, ``vm-connected``, ``update-running``,
        ``unreclaimed-files`` (the last three unless ``force``)."""
        ...

    async def start_update(
        self, request: models.UpdateStartRequest, uid: int | None
    ) -> models.UpdateRecord:
        """Start an update in the background. ``uid``: the caller's, from SO_PEERCRED on the
        unix socket (None over TCP, where the bearer token stands for root). Raises
        ``PreflightRefused``, LuodError ``update-running`` or ``not-allowed``."""
        ...

    async def update(self) -> models.UpdateState:
        """The current phase, and the running (or last) update."""
        ...

    async def abort(self, reason: str | None, uid: int | None) -> models.AbortResult:
        """Abort the running update and wait until every VM resumed. Raises ``wrong-state``."""
        ...

    async def history(self, kind: str, cursor: str | None, limit: int) -> models.History:
        """``limit`` entries of ``kind`` (update, qualification or all) older than ``cursor``,
        newest first (luod.rest.history_reads.page). Raises LuodError ``bad-cursor``."""
        ...

    async def ended_updates(self) -> Sequence[Ended]:
        """What the metrics count of every ended update, newest first."""
        ...

    async def qualify(self, request: qm.QualifyRequest, uid: int | None) -> qm.QualificationRecord:
        """Start a qualification (issue 14 §1). Raises LuodError ``vms-preserved``,
        ``qualification-running``, ``update-running``, ``bad-chain``,
        ``qemu-canary-unavailable`` or ``not-allowed``."""
        ...

    async def qualifications(self) -> qm.QualificationList: ...

    async def qualification(self, qid: str) -> qm.QualificationRecord:
        """Raises LuodError ``unknown-qualification``."""
        ...

    async def watch(self, last_id: str | None = None) -> Watch:
        """Where things stand, and every event after that: taken together, so an event is
        either already in the state or in the stream, never lost between the two. With
        ``last_id`` (a client's Last-Event-ID), the stream starts with the events after it,
        when luod still holds them all (``Watch.resumed``)."""
        ...


@dataclass(frozen=True)
class Watch:
    state: models.UpdateState
    state_id: str  # the id of the last event the state includes
    stream: EventStream
    resumed: bool  # the stream replays what followed the client's Last-Event-ID


class PreflightRefused(LuodError):
    """``preflight-failed``, with the checks (the REST problem carries them)."""

    def __init__(self, error: LuodError, checks: list[models.Check]) -> None:
        super().__init__(error.code, error.message, error.hint, error.errno)
        self.checks = checks
