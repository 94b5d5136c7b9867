"""The two dialects of the VMM socket, as pure decisions (api/vmm-protocol.md §2a).

A connection speaks luo-agent's dialect unless it asks for more: SUBSCRIBE, START_PRESERVATION,
one READY ("preserved and ready for the kexec"), CLAIM. luod's extensions are capabilities a
client lists in HELLO; luod grants the ones it knows, and sends an extension's events, or waits
for its answers, only on connections that were granted it. These functions decide what an
update does with each VM given its VMM's capabilities; the update driver and the request
handler ask them and do the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final, NamedTuple

from luod.core.capabilities import ALL as ALL  # luod's side names them here, as before
from luod.core.capabilities import Capability as Capability
from luod.core.model import Mode
from luod.values import Value

EVENT_NEEDS: Final[dict[str, Capability | None]] = {
    "START_PRESERVATION": None,  # luo-agent's own event
    "FREEZE": Capability.FREEZE,
    "RESUME": Capability.RESUME,
    "PHASE": Capability.PROGRESS,
    "VM_PROGRESS": Capability.PROGRESS,
    "UPDATE_END": Capability.PROGRESS,
}


def grant(asked: Iterable[str] | None) -> frozenset[Capability]:
    """What luod grants for a HELLO's list: the names it knows (others are ignored)."""
    return frozenset(c for c in Capability if c.value in set(asked or ()))


def may_send(event: str, granted: Iterable[str]) -> bool:
    """Whether a connection with ``granted`` capabilities receives ``event``."""
    needed = EVENT_NEEDS.get(event)
    return needed is None or needed in frozenset(granted)


def claim_ends_custody(granted: Iterable[str]) -> bool:
    """luo-agent's CLAIM hands the session over for good: there is no DONE in its dialect."""
    return Capability.DONE not in frozenset(granted)


class Action(StrEnum):
    SEND = "send"  # push the event and wait for the VM's READY
    COUNT = "count"  # nothing to wait for: the VM counts as having answered
    REFUSE = "refuse"  # the VM cannot answer this barrier: the update must abort


class _Step(NamedTuple):
    action: Action
    note: str = ""
    record: str = ""  # a step for the update record, so the operator sees the decision later


class Step(Value, _Step):
    __slots__ = ()


TRUSTED: Final = "freeze_trusted"  # record step: counted as paused on its VMM's word alone


NO_VMM: Final = "no VMM connected"


def barrier_step(
    event: str, mode: Mode, granted: Iterable[str] | None, preserve_acked: bool
) -> Step:
    """What a barrier (START_PRESERVATION or FREEZE) does with one VM.

    ``granted`` is its VMM connection's capabilities, None when no VMM is connected;
    ``preserve_acked``: this update already counted its START_PRESERVATION as answered.
    """
    if granted is None:
        what = "nothing to pause" if event == "FREEZE" else "the session is carried as it is"
        return Step(Action.COUNT, f"{NO_VMM}: {what}")
    if event != "FREEZE" or Capability.FREEZE in frozenset(granted):
        return Step(Action.SEND)
    if mode is Mode.HANDOVER:
        return Step(
            Action.REFUSE,
            "its VMM is connected but did not ask for FREEZE (HELLO capability 'freeze'): "
            "luod cannot pause it",
        )
    if preserve_acked:
        note = "luo-agent dialect: its READY meant ready for the kexec"
        return Step(Action.COUNT, note, record=TRUSTED)
    return Step(
        Action.REFUSE,
        "luo-agent dialect, and no READY to START_PRESERVATION in this update: "
        "it is not ready for the kexec",
    )
