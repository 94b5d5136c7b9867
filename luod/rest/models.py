"""Every request and response body of the REST API, as pydantic models (the OpenAPI is made
from them, so they say exactly what travels).

Requests are strict (unknown fields and wrong types are refused, naming the field) and mirror
the VMM socket's limits (api/vmm-protocol.md §10). Responses keep open-ended words (phase,
state, outcome) as plain strings with examples: clients must accept values they do not know.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from luod.core.orchestrator import Phase
from luod.vmm.codec import DEADLINE_PHASES, MAX_DEADLINE

NO_NUL = r"^[^\x00]*$"
Path = Annotated[str, Field(min_length=1, max_length=4096, pattern=NO_NUL)]


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
PhaseName = Annotated[str, Field(examples=[str(p) for p in Phase])]
Outcome = Annotated[
    str,
    Field(
        examples=[
            "running",
            "refused",
            "aborted",
            "failed",
            "completed",
            "completed-with-unreclaimed",
        ]
    ),
]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# --- requests -----------------------------------------------------------------------------------
class PreflightRequest(Request):
    """The next kernel, and its command line: given, or the running kernel's (``reuse_cmdline``).
    Exactly one of the two, so an update never boots a command line nobody chose."""

    kernel: Path = Field(description="Path of the next kernel image (a bzImage).")
    initrd: OptionalPath = None
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
    deadlines: dict[DeadlinePhase, Seconds] = Field(
        default_factory=dict,
        description="Seconds per phase, replacing the defaults for this update.",
    )
    dry_run: StrictBool = Field(default=False, description="Only run the preflight checks.")


class AbortRequest(Request):
    reason: Reason = None


# --- responses ----------------------------------------------------------------------------------
class Health(Response):
    status: Literal["ok"] = "ok"
    version: str


class Status(Response):
    host: str
    kernel: str = Field(description="Release of the running kernel.")
    luo_supported: bool = Field(description="/dev/liveupdate is present.")
    liveupdate_number: int = Field(description="Live updates this machine went through.")
    phase: PhaseName
    vms: int
    sessions: int = Field(description="LUO sessions luod holds.")
    files: int = Field(description="Files (fds) preserved in those sessions.")
    preserved_bytes: int
    backend: str = Field(examples=["kernel", "sim"])
    version: str


class Check(Response):
    id: str = Field(
        examples=["device", "kho", "kernel-image", "next-cmdline", "handover", "handover-abi"]
    )
    status: Literal["pass", "warn", "fail"]
    message: str
    hint: str


class PreflightResult(Response):
    ok: bool = Field(description="No check failed: an update would start.")
    checks: list[Check]


class VmFile(Response):
    name: str
    kind: str = Field(examples=["memfd"])
    size: int
    token: int
    reclaimed: bool
    exec_sealed: bool


class Vm(Response):
    id: str
    owner_uid: int
    mode: Literal["handover", "delegation"]
    state: str = Field(examples=["registered", "preserved", "incoming", "reclaimed", "lost"])
    session: str
    files: list[VmFile]
    note: str
    rejected: dict[str, str] = Field(description="Files luod refused to preserve, and why.")


class VmList(Response):
    vms: list[Vm]


class Stamp(Response):
    realtime: float
    monotonic: float
    boottime: float


class Transition(Response):
    from_: PhaseName = Field(alias="from")
    to: PhaseName
    reason: str
    at: Stamp


class KernelAbi(Response):
    """One kernel's handover ABI as luod read it; null strings are absent or unknown."""

    release: str
    version: str = Field(description="`uname -v` of the kernel.")
    kho: str | None = Field(examples=["kho-v4"])
    luo: str | None = Field(examples=["luo-v5"])
    handlers: dict[str, str] | None = Field(
        examples=[{"memfd": "memfd-v2"}], description="Per fd kind (null: unknown)."
    )
    page_size: int | None
    unknown: dict[str, str] = Field(description="What could not be read, and why.")
    sources: dict[str, str] = Field(description="Where each item was read.")


class HandoverAbi(Response):
    status: Literal["pass", "warn", "fail"]
    message: str
    override: bool = Field(description="Went ahead unverified on the operator's override.")
    kinds: list[str] = Field(description="The fd kinds the next kernel must restore.")
    running: KernelAbi
    next: KernelAbi
    qualification: Literal["pass", "warn", "fail"]


class RecordedRequest(Response):
    kernel: str
    initrd: str | None
    cmdline: str | None = Field(description="null: the running kernel's.")
    deadlines: dict[str, float]
    uid: int
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


class UpdateRecord(Response):
    id: str
    request: RecordedRequest
    phases: list[Transition]
    vms: dict[str, dict[str, Stamp]] = Field(description="Per VM, when each step happened.")
    events: dict[str, Stamp]
    outcome: Outcome
    reason: str
    blackout: dict[str, float | None] = Field(
        description="Per VM, seconds from its freeze ack to its done (null until both)."
    )


class HistoryRecord(UpdateRecord):
    finished: float = Field(description="When the update ended (epoch seconds).")


class UpdateState(Response):
    phase: PhaseName
    update: UpdateRecord | None = Field(description="The running update, or the last one.")


class AbortResult(Response):
    update: UpdateRecord | None


class History(Response):
    history: list[HistoryRecord] = Field(description="Oldest first.")


class FieldError(Response):
    field: str = Field(examples=["body.kernel"])
    message: str


class Problem(Response):
    """RFC 9457 problem details, with luod's error ``code`` (the VMM socket's codes)."""

    type: str = Field(examples=["urn:luod:problem:unknown-vm"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str = Field(examples=["unknown-vm", "update-running", "preflight-failed"])
    hint: str | None = None
    errno: int | None = None
    errno_name: str | None = None
    checks: list[Check] | None = Field(default=None, description="With preflight-failed.")
    errors: list[FieldError] | None = Field(default=None, description="With bad-request.")


# --- events (GET /v1/events) --------------------------------------------------------------------
class StateEvent(UpdateState):
    """First on every stream: where things stand when the client subscribed."""

    event: Literal["STATE"]


class PhaseEvent(Transition):
    event: Literal["PHASE"]


class VmProgressEvent(Response):
    event: Literal["VM_PROGRESS"]
    id: str
    step: str = Field(
        examples=["preserve_ack", "freeze_ack", "reclaimed", "done"],
        description="Clients must accept steps they do not know.",
    )
    note: str | None = None


class UpdateEndEvent(Response):
    event: Literal["UPDATE_END"]
    id: str
    outcome: Outcome
    reason: str


Event = Annotated[
    StateEvent | PhaseEvent | VmProgressEvent | UpdateEndEvent, Field(discriminator="event")
]
