"""luod's internal update records (luod.core.timeline: clock stamps, epoch floats) as the REST
API's models (RFC 3339 times, durations in ``_seconds`` fields, a stable reason code), and the
history's cursors. Pure functions: the adapter and luod.rest.history_reads call them.

A cursor is an entry's index from the oldest: the history is append-only, so that index never
changes, and paging while updates end stays consistent (new entries land before the first
page, never in the middle). Opaque to clients."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from luod.core import blackout_split
from luod.errors import LuodError
from luod.rest import models
from luod.rest.qualification_models import QualificationRecord

REASON_PREFIXES: Final = (  # (reason starts with, its code); first match wins
    ("preflight refused", models.ReasonCode.PREFLIGHT_FAILED),
    ("deadline:", models.ReasonCode.DEADLINE),
    ("vm-refused:", models.ReasonCode.VM_REFUSED),
    ("reboot failed", models.ReasonCode.REBOOT_FAILED),
    ("kexec-timeout:", models.ReasonCode.KEXEC_TIMEOUT),
    ("unreclaimed:", models.ReasonCode.UNRECLAIMED),
    ("luod is stopping", models.ReasonCode.LUOD_STOPPING),
)
CURSOR: Final = re.compile(r"^h(\d{1,9})$")
MAX_PAGE: Final = 500
DEFAULT_PAGE: Final = 50


def time_of(stamp: Mapping[str, Any] | float | None) -> datetime | None:
    """A luod clock stamp (its realtime) or epoch seconds, as a UTC time."""
    if stamp is None:
        return None
    seconds = float(stamp["realtime"]) if isinstance(stamp, Mapping) else float(stamp)
    return datetime.fromtimestamp(seconds, UTC)


def reason_code(outcome: str, reason: str) -> models.ReasonCode:
    if outcome in ("completed", "running"):
        return models.ReasonCode.NONE
    for prefix, code in REASON_PREFIXES:
        if reason.startswith(prefix):
            return code
    if outcome == "aborted" and not re.match(r"^[a-z0-9-]+: ", reason):
        return models.ReasonCode.OPERATOR  # an abort's free-text reason, from whoever asked
    return models.ReasonCode.OTHER


def update_record(data: Mapping[str, Any], finished: float | None = None) -> models.UpdateRecord:
    """From ``UpdateRecord.to_dict()`` (and ``finished``, the history's end time)."""
    phases = [_transition(p) for p in data.get("phases", [])]
    outcome = str(data.get("outcome", "running"))
    ended = time_of(finished)
    if ended is None and outcome != "running" and phases:
        ended = phases[-1].at
    request = dict(data.get("request", {}))
    request["deadline_seconds"] = request.pop("deadlines", {})
    return models.UpdateRecord(
        id=str(data["id"]),
        request=models.RecordedRequest.model_validate(request),
        phases=phases,
        vms={
            vm: {step: _time(stamp) for step, stamp in steps.items()}
            for vm, steps in data.get("vms", {}).items()
        },
        events={name: _time(stamp) for name, stamp in data.get("events", {}).items()},
        outcome=models.Outcome(outcome),
        reason=str(data.get("reason", "")),
        reason_code=reason_code(outcome, str(data.get("reason", ""))),
        aborted_by=str(data.get("aborted_by", "")),
        started_at=phases[0].at if phases else None,
        ended_at=ended,
        blackout_seconds=dict(data.get("blackout", {})),
        blackout_parts={
            vm: models.BlackoutParts.model_validate(parts)
            for vm, parts in blackout_split.split(data).items()
        },
    )


def history_entry(entry: Mapping[str, Any]) -> models.HistoryEntry:
    """One history line's record, an update's or a qualification's."""
    if _kind(entry) == "qualification":
        return qualification_record(entry)
    return update_record(entry, float(entry.get("finished", 0)) or None)


def _kind(entry: Mapping[str, Any]) -> str:
    return str(entry.get("kind", "update"))


def qualification_record(data: Mapping[str, Any]) -> QualificationRecord:
    """From the qualification driver's record (epoch ``started`` and ``finished``)."""
    fields = {k: v for k, v in data.items() if k not in ("started", "finished")}
    return QualificationRecord.model_validate(
        {
            **fields,
            "started_at": time_of(data["started"]),
            "ended_at": time_of(data.get("finished")),
        }
    )


def cursor_of(index: int) -> str:
    return base64.urlsafe_b64encode(f"h{index}".encode()).decode().rstrip("=")


def position(cursor: str, size: int) -> int:
    """The index a cursor names; LuodError ``bad-cursor`` for one luod did not hand out."""
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    found = CURSOR.match(decoded)
    if found is None or int(found[1]) > size:
        raise LuodError(
            "bad-cursor",
            f"cursor {cursor[:40]!r} is not one luod handed out",
            "start from the first page (no cursor), then follow next_cursor",
        )
    return int(found[1])


def _transition(data: Mapping[str, Any]) -> models.Transition:
    return models.Transition.model_validate({**data, "at": time_of(data["at"])})


def _time(stamp: Mapping[str, Any]) -> datetime:
    moment = time_of(stamp)
    assert moment is not None
    return moment
