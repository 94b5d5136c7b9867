"""Every request and response body of the REST API, as pydantic models (the OpenAPI is made
from them, so they say exactly what travels, every field described).

The contract for fleet tooling (api/openapi.json, drift-tested):
- times are RFC 3339 strings in UTC (``2031-05-01T12:00:00.250000Z``), durations are seconds
  in fields whose name ends in ``_seconds``;
- phases, VM states and outcomes are enums (``Phase``, ``VmState``, ``Outcome``, ``ReasonCode``);
- requests are strict (unknown fields and wrong types are refused, naming the field) and mirror
  the VMM socket's limits (api/vmm-protocol.md §10).
luod.rest.records turns luod's internal records into these models.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from luod.core.model import VmState
from luod.core.orchestrator import DEADLINE_PHASES, MAX_DEADLINE, Phase
from luod.rest.qualification_models import QualificationRecord

NO_NUL = r"^[^\x00]*$"
Path = Annotated[str, Field(min_length=1, max_length=4096, pattern=NO_NUL)]
Time = Annotated[datetime, AwareDatetime]
"""An RFC 3339 time in UTC (luod's realtime clock, microseconds)."""


def _string(max_length: int, min_length: int = 0) -> dict[str, object]:
    """The schema of an optional string: null is accepted but not advertised (omit it)."""
    return {"type": "string", "minLength": min_length, "maxLength": max_length, "pattern": NO_NUL}


# Optional, not a union with None: a union would put member tags in the error location.
OptionalPath = Annotated[
    str | None,
    Field(min_length=1, max_length=4096, pattern=NO_NUL),
    WithJsonSchema(_string(4096, 1)),
]
OptionalText = Annotated[
    str | None, Field(max_length=4096, pattern=NO_NUL), WithJsonSchema(_string(4096))
]
Reason = Annotated[str | None, Field(max_length=512, pattern=NO_NUL), WithJsonSchema(_string(512))]


DeadlinePhase = Literal[DEADLINE_PHASES]  # type: ignore[valid-type]
Seconds = Annotated[float, Field(gt=0, le=MAX_DEADLINE, allow_inf_nan=False, strict=True)]


class Outcome(StrEnum):
    """How an update ended (``running`` while it has not)."""

    RUNNING = "running"
    REFUSED = "refused"
    ABORTED = "aborted"
    FAILED = "failed"
    COMPLETED = "completed"
    COMPLETED_WITH_UNRECLAIMED = "completed-with-unreclaimed"


class ReasonCode(StrEnum):
    """Why an update did not simply complete, as a stable word (``reason`` has the details):
    ``preflight-failed`` (refused, nothing changed), ``deadline`` (a VMM did not answer in
    time), ``vm-refused`` (a VMM answered with an error), ``operator`` (an explicit abort),
    ``luod-stopping``, ``reboot-failed`` (the kernel rolled the freeze back),
    ``kexec-timeout`` (systemd never stopped luod), ``unreclaimed`` (VMs not reclaimed in the
    grace period), ``other`` (any other luod error code); ``none`` when it completed."""

    NONE = "none"
    PREFLIGHT_FAILED = "preflight-failed"
    DEADLINE = "deadline"
    VM_REFUSED = "vm-refused"
    OPERATOR = "operator"
    LUOD_STOPPING = "luod-stopping"
    REBOOT_FAILED = "reboot-failed"
    KEXEC_TIMEOUT = "kexec-timeout"
    UNRECLAIMED = "unreclaimed"
    OTHER = "other"


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# --- requests -----------------------------------------------------------------------------------
class PreflightRequest(Request):
    """The next kernel, and its command line: given, or the running kernel's (``reuse_cmdline``).
    Exactly one of the two, so an update never boots a command line nobody chose."""

    kernel: Path = Field(description="Path of the next kernel image (a bzImage) on the host.")
    initrd: OptionalPath = Field(default=None, description="Path of its initrd, if any.")
    reuse_cmdline: StrictBool = Field(
        default=False, description="Boot the next kernel with the running kernel's command line."
    )
    cmdline: OptionalText = Field(
        default=None,
        validate_default=True,
        description="The next kernel's command line (keep liveupdate=on).",
    )
    allow_unknown_abi: StrictBool = Field(
        default=False,
        description="Go ahead when luod cannot read the running or the next kernel's handover "
        "ABI: the check handover-abi warns instead of failing, and the update records the "
        "override. A known mismatch is refused regardless.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["cmdline"], "properties": {"reuse_cmdline": {"const": False}}},
                {
                    "required": ["reuse_cmdline"],
                    "properties": {"reuse_cmdline": {"const": True}},
                    "not": {"required": ["cmdline"]},
                },
            ]
        },
    )

    @field_validator("cmdline")
    @classmethod
    def _exactly_one(cls, cmdline: str | None, info: ValidationInfo) -> str | None:
        reuse = info.data.get("reuse_cmdline")
        if reuse is not None and (cmdline is None) != reuse:
            raise ValueError("give either cmdline or reuse_cmdline: true (exactly one)")
        return cmdline


class UpdateStartRequest(PreflightRequest):
    deadline_seconds: dict[DeadlinePhase, Seconds] = Field(
        default_factory=dict,
        description="Seconds per phase (preparing, freezing, frozen, reclaiming, aborting), "
        "replacing luod's configured deadlines for this update.",
    )
    dry_run: StrictBool = Field(default=False, description="Only run the preflight checks.")


class AbortRequest(Request):
    reason: Reason = Field(
        default=None, description="Recorded in the update, and sent to the VMMs with RESUME."
    )


# --- responses ----------------------------------------------------------------------------------
class Health(Response):
    status: Literal["ok"] = Field(default="ok", description="Always ok: luod answers.")
    version: str = Field(description="luod's version.")


class CustodyHealth(Response):
    kind: Literal["systemd", "keeper", "memory"] = Field(
        description="Who holds a copy of every session fd: systemd's fd store, luod's keeper "
        "process, or luod itself (tests only)."
    )
    healthy: bool = Field(
        description="The custodian holds every session luod holds. False after a loss "
        "(a keeper killed) until a new one got them all: do not stop luod meanwhile."
    )
    renewals: int = Field(description="Custodians replaced after a loss since luod started.")
    problem: str = Field(description="The last loss (empty if none).")


class Status(Response):
    host: str = Field(description="The host's name.")
    kernel: str = Field(description="Release of the running kernel (uname -r).")
    luo_supported: bool = Field(description="/dev/liveupdate is present.")
    liveupdate_number: int = Field(description="Live updates this machine went through.")
    phase: Phase = Field(description="The update phase luod is in (idle: none running).")
    vms: int = Field(description="VMs luod knows.")
    sessions: int = Field(description="LUO sessions luod holds.")
    files: int = Field(description="Files (fds) preserved in those sessions.")
    preserved_bytes: int = Field(description="Bytes of those files.")
    backend: str = Field(
        examples=["kernel", "sim"], description="kernel: /dev/liveupdate; sim: the simulator."
    )
    version: str = Field(description="luod's version.")
    custody: CustodyHealth = Field(description="The custody of the session fds.")


class Check(Response):
    id: str = Field(
        examples=["device", "kho", "kernel-image", "next-cmdline", "handover", "handover-abi"],
        description="The check's stable name.",
    )
    status: Literal["pass", "warn", "fail"] = Field(description="fail refuses the update.")
    message: str = Field(description="What the check found.")
    hint: str = Field(description="What to do about it (empty when it passed).")


class PreflightResult(Response):
    ok: bool = Field(description="No check failed: an update would start.")
    checks: list[Check] = Field(description="Every check, in the order luod runs them.")


class VmFile(Response):
    name: str = Field(description="The file's name, given by its VMM (ram0, state, ...).")
    kind: str = Field(examples=["memfd"], description="What kind of file luod found.")
    size: int = Field(description="Its size in bytes when preserved.")
    token: int = Field(description="Its LUO token in the VM's session.")
    reclaimed: bool = Field(description="Handed back to its VMM after the kexec.")
    exec_sealed: bool = Field(description="F_SEAL_EXEC: it comes back write-sealed.")


class VmNic(Response):
    name: str = Field(examples=["vm1-net0"], description="A tap or macvtap of the VM.")
    bridge: str | None = Field(description="The bridge its VMM says it sits on (null: none).")


class VmNet(Response):
    """After a kexec: what luod's rebuild of the VM's NICs found and did."""

    ready: bool = Field(description="Every NIC exists as its kind: the VMM can start on it.")
    exact: bool = Field(description="Every device is exactly as recorded before the kexec.")
    pending: bool = Field(False, description="The rebuild has not finished yet.")
    seconds: float = Field(0.0, description="What the rebuild took for this VM.")
    problems: list[str] = Field(description="One line per device not exactly as recorded.")
    devices: list[dict[str, Any]] = Field(
        description="Per device: name, role, status (kept, rebuilt, differs, partial, "
        "conflict, unsupported, failed, absent), the steps done, errors, differences."
    )


class Vm(Response):
    id: str = Field(description="The VM's id, given by its VMM.")
    owner_uid: int = Field(description="The uid of the VMM that registered it.")
    mode: Literal["handover", "delegation"] = Field(
        description="handover: luod preserves its fds; delegation: its VMM does, in the "
        "session luod delegates."
    )
    state: VmState = Field(description="Where the VM stands.")
    session: str = Field(description="Its LUO session's name.")
    files: list[VmFile] = Field(description="The files preserved for it.")
    note: str = Field(description="luod's last remark about it (empty if none).")
    rejected: dict[str, str] = Field(description="Files luod refused to preserve, and why.")
    connected: bool = Field(description="A VMM connection speaks for it now.")
    disconnected_since: Time | None = Field(
        description="Since when no VMM speaks for it: its VMM closed the connection, or (after "
        "a kexec or a luod restart) none spoke for it since luod started. Null while connected."
    )
    nics: list[VmNic] = Field(
        default_factory=list, description="The network devices its VMM declared."
    )
    net: VmNet | None = Field(
        None, description="After a kexec: its NICs' rebuild (null: no NICs recorded)."
    )


class Released(Response):
    session: str = Field(description="The LUO session closed (unpreserved, or finished).")
    files: int = Field(description="Files that were preserved in it.")
    bytes: int = Field(description="Their bytes.")
    destroyed: list[str] = Field(
        description="Files that came through an update and were never reclaimed (force only)."
    )


class DropResult(Response):
    id: str = Field(description="The VM dropped.")
    state: VmState = Field(description="Its state when it was dropped.")
    forced: bool = Field(description="force=true was given.")
    released: Released = Field(description="What luod released.")


class VmList(Response):
    vms: list[Vm] = Field(description="Every VM luod knows, in registration order.")


class Transition(Response):
    from_: Phase = Field(alias="from", description="The phase left.")
    to: Phase = Field(description="The phase entered.")
    reason: str = Field(description="Why.")
    at: Time = Field(description="When.")


class KernelAbi(Response):
    """One kernel's handover ABI as luod read it; null strings are absent or unknown."""

    release: str = Field(description='`uname -r` of the kernel ("?" when unread).')
    version: str = Field(description="`uname -v` of the kernel.")
    kho: str | None = Field(examples=["kho-v4"], description="KHO's compatible string.")
    luo: str | None = Field(examples=["luo-v5"], description="LUO's compatible string.")
    handlers: dict[str, str] | None = Field(
        examples=[{"memfd": "memfd-v2"}],
        description="File handler compatible string per fd kind (null: unknown).",
    )
    page_size: int | None = Field(description="Bytes per page (null: unknown).")
    unknown: dict[str, str] = Field(description="What could not be read, and why.")
    sources: dict[str, str] = Field(description="Where each item was read.")


class HandoverAbi(Response):
    status: Literal["pass", "warn", "fail"] = Field(description="The check's status.")
    message: str = Field(description="The check's message: both strings on a mismatch.")
    override: bool = Field(description="Went ahead unverified on the operator's override.")
    kinds: list[str] = Field(description="The fd kinds the next kernel must restore.")
    running: KernelAbi = Field(description="The running kernel (A).")
    next: KernelAbi = Field(description="The next kernel (B).")
    qualification: Literal["pass", "warn", "fail"] = Field(
        description="Whether the pair has a passing qualification on record (check qualified)."
    )


class RecordedRequest(Response):
    kernel: str = Field(description="The next kernel's path.")
    initrd: str | None = Field(None, description="Its initrd's path (null: none).")
    cmdline: str | None = Field(None, description="Its command line (null: the running kernel's).")
    deadline_seconds: dict[str, float] = Field(
        default_factory=dict, description="Deadlines asked for, per phase."
    )
    uid: int = Field(description="Who asked (0 over TCP, where the token stands for root).")
    kexec_mode: Literal["direct", "systemd"] | None = Field(
        None, description="How the kexec ran (null: a record from before luod recorded it)."
    )
    uplink: str | None = Field(
        None,
        description="The link of the host's default route at prepare; its return after the "
        "kexec is the event uplink_up.",
    )
    allow_unknown_abi: bool = Field(False, description="The operator's override was given.")
    handover_abi: HandoverAbi | None = Field(
        None, description="The handover-abi check as the update saw it (null: older record)."
    )


class BlackoutParts(Response):
    """Where one VM's blackout went, in seconds: its freeze ack to its done, cut where luod
    stamped a step. They add up to the blackout; ``kexec`` ends on the new kernel's clock, set
    from the hardware clock, so it and ``boot`` may trade up to a second (docs/operations.md
    §4)."""

    wait: float = Field(description="The other VMs' READY, then luod's last bookkeeping.")
    kexec: float = Field(description="luod's kexec step until the new kernel started.")
    boot: float = Field(description="The new kernel's boot until luod's process started.")
    start: float | None = Field(
        description="luod's own start-up, its interpreter and imports (null: the record has "
        "no luod_exec, and boot runs until luod ran)."
    )
    luod: float = Field(description="luod taking the sessions back.")
    reclaim: float = Field(description="Until the VM's VMM asked for its files and got them.")
    restore: float = Field(description="The VMM's restore, until its DONE.")


class UpdateRecord(Response):
    kind: Literal["update"] = Field(default="update", description="This entry's kind.")
    id: str = Field(description="The update's id.")
    request: RecordedRequest = Field(description="What was asked.")
    phases: list[Transition] = Field(description="Every phase transition, in order.")
    vms: dict[str, dict[str, Time]] = Field(
        description="Per VM, when each step happened (freeze_sent, freeze_ack, reclaimed, "
        "done, ...; clients must accept steps they do not know)."
    )
    events: dict[str, Time] = Field(
        description="Host events: kernel_boot, luod_exec, luod_start, sessions_retrieved, "
        "uplink_up."
    )
    outcome: Outcome = Field(description="How it ended (running until it does).")
    reason: str = Field(description="Why it ended so, in words (empty when it completed).")
    reason_code: ReasonCode = Field(description="The same, as a stable word.")
    aborted_by: str = Field(
        "",
        description="Who aborted it: `uid N` (unix socket or VMM socket), `token` (the REST "
        "bearer token); empty unless an operator aborted it.",
    )
    started_at: Time | None = Field(description="When it started (its first transition).")
    ended_at: Time | None = Field(description="When it ended (null while running).")
    blackout_seconds: dict[str, float | None] = Field(
        description="Per VM, seconds from its freeze ack to its done after the kexec, or to "
        "its resume when the update was aborted (null until both happened)."
    )
    blackout_parts: dict[str, BlackoutParts] = Field(
        default_factory=dict,
        description="Per VM, where its blackout went; a VM is here once luod stamped every "
        "step of it across the kexec (never for an aborted update).",
    )


class UpdateState(Response):
    phase: Phase = Field(description="The phase luod is in.")
    update: UpdateRecord | None = Field(description="The running update, or the last one.")


class AbortResult(Response):
    update: UpdateRecord | None = Field(description="The aborted update, as it ended.")


HistoryEntry = Annotated[UpdateRecord | QualificationRecord, Field(discriminator="kind")]
HistoryKind = Literal["update", "qualification", "all"]


class History(Response):
    history: list[HistoryEntry] = Field(
        description="Ended updates (kind update) and qualifications (kind qualification), "
        "newest first."
    )
    next_cursor: str | None = Field(
        description="Pass it as ?cursor= for the next (older) page; null on the last page."
    )


class FieldError(Response):
    field: str = Field(
        examples=["body.kernel"], description="Where: body, query or path, then the field."
    )
    message: str = Field(description="What is wrong with it.")


class Problem(Response):
    """RFC 9457 problem details, with luod's error ``code`` (the VMM socket's codes)."""

    type: str = Field(
        examples=["urn:luod:problem:unknown-vm"],
        description="urn:luod:problem:CODE, one stable URI per kind of error.",
    )
    title: str = Field(description="The kind of error, in words (the same for every instance).")
    status: int = Field(description="The HTTP status.")
    detail: str = Field(description="This occurrence, in words.")
    instance: str | None = Field(default=None, description="The request path.")
    code: str = Field(
        examples=["unknown-vm", "update-running", "preflight-failed"],
        description="luod's error code, as on the VMM socket.",
    )
    hint: str | None = Field(default=None, description="What to do about it.")
    errno: int | None = Field(default=None, description="The errno, for kernel errors.")
    errno_name: str | None = Field(default=None, description="Its name (EBUSY, ...).")
    checks: list[Check] | None = Field(default=None, description="With preflight-failed.")
    errors: list[FieldError] | None = Field(default=None, description="With bad-request.")


# --- events (GET /v1/events) --------------------------------------------------------------------
class StateEvent(UpdateState):
    """First on every stream (unless it resumes after Last-Event-ID): where things stand
    when the client subscribed."""

    event: Literal["STATE"] = Field(description="The event's name.")
    at: Time | None = Field(
        default=None, description="luod's time then (a view counts elapsed time from it)."
    )


class PhaseEvent(Transition):
    """A phase transition of the running update."""

    event: Literal["PHASE"] = Field(description="The event's name.")
    deadline_seconds: float | None = Field(
        default=None, description="How long the phase entered may last (null: no deadline)."
    )


class VmProgressEvent(Response):
    """One VM's step in the running update."""

    event: Literal["VM_PROGRESS"] = Field(description="The event's name.")
    id: str = Field(description="The VM.")
    step: str = Field(
        examples=["preserve_ack", "freeze_ack", "reclaimed", "done"],
        description="Its step. Clients must accept steps they do not know.",
    )
    note: str | None = Field(default=None, description="luod's remark, if any.")
    at: Time | None = Field(default=None, description="When (luod's clock).")


class ShutdownEvent(Response):
    """luod is stopping: the last event of every stream, which ends right after it."""

    event: Literal["SHUTDOWN"] = Field(description="The event's name.")
    reason: str = Field(description="Why, in words.")


class UpdateEndEvent(Response):
    """The running update ended."""

    event: Literal["UPDATE_END"] = Field(description="The event's name.")
    id: str = Field(description="The update.")
    outcome: Outcome = Field(description="How it ended.")
    reason: str = Field(description="Why, in words.")


Event = Annotated[
    StateEvent | PhaseEvent | VmProgressEvent | UpdateEndEvent | ShutdownEvent,
    Field(discriminator="event"),
]
