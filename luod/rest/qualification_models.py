"""The REST models of qualifications (issue 14 §1): the request of ``POST /v1/qualifications``
and the report, as the history keeps it (kind ``qualification``). luod.rest.models re-exports
them and puts the report beside the updates in ``History``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Discriminator, Field, StrictBool, Tag

NO_NUL = r"^[^\x00]*$"
ImagePath = Annotated[str, Field(min_length=1, max_length=4096, pattern=NO_NUL)]
Cmdline = Annotated[str, Field(max_length=4096, pattern=NO_NUL)]
Time = Annotated[datetime, AwareDatetime]


class ChainKernel(BaseModel):
    """One kernel of a chain and how it boots: its image, its initrd, its command line."""

    model_config = ConfigDict(extra="forbid")
    image: ImagePath = Field(description="Path of the kernel image (a bzImage) on the host.")
    initrd: ImagePath | None = Field(
        default=None, description="Path of its initrd (a Debian host's kernels need theirs)."
    )
    cmdline: Cmdline | None = Field(
        default=None,
        description="Its command line (keep liveupdate=on); absent: the command line of the "
        "kernel each step leaves.",
    )


def _form(value: object) -> str:
    return "path" if isinstance(value, str) else "object"


ChainEntry = Annotated[
    Annotated[ImagePath, Tag("path")] | Annotated[ChainKernel, Tag("object")],
    Discriminator(_form),  # one form judged, not both: errors name the member given
]


class QualifyRequest(BaseModel):
    """A chain of kernels: the running kernel's first, then each next one."""

    model_config = ConfigDict(extra="forbid")
    chain: list[ChainEntry] = Field(
        min_length=2,
        max_length=8,
        description="Kernels: A (running), B[, A, ...]; each an image path, or an object with "
        "its image, initrd and command line.",
    )
    with_vms: StrictBool = Field(
        default=False, description="Run although VMs are preserved (they go through the kexec)."
    )
    qemu_canary: StrictBool = Field(
        default=False,
        description="A real QEMU guest (under luod-qemu) crosses each kexec too, checked after "
        "each: restored, its RAM intact, never reset, running on. 422 "
        "`qemu-canary-unavailable` on a host without QEMU.",
    )
    large_mib: int = Field(
        default=256, ge=1, le=65536, strict=True, description="Size of the large canary memfd."
    )
    many_files: int = Field(
        default=130, ge=1, le=4096, strict=True, description="Files in the many-files session."
    )
    sessions: int = Field(
        default=16,
        ge=0,
        le=1_000_000,
        strict=True,
        description="One-file sessions; more than luod's own session limit (its fd limit less "
        "64 and the sessions it holds) is cut to that limit: a large number tests the limit.",
    )


class Response(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class QualifiedKernel(Response):
    image: str = Field(description="The kernel image's path.")
    release: str = Field(description="`uname -r` it declares.")
    version: str = Field(description="`uname -v` it declares.")
    kho: str | None = Field(description="KHO's compatible string it declares.")
    luo: str | None = Field(description="LUO's compatible string it declares.")
    handlers: dict[str, str] = Field(description="File handler strings, per fd kind.")
    initrd: str | None = Field(None, description="The initrd it boots with (null: none).")
    cmdline: str | None = Field(
        None, description="Its command line (null: that of the kernel the step leaves)."
    )


class QualificationCheck(Response):
    name: str = Field(description="What was checked (session/file: property).")
    result: Literal["pass", "fail"] = Field(description="Whether actual equals expected.")
    expected: str = Field(description="The expected value.")
    actual: str = Field(description="The value found after the kexec.")


class StepTimings(Response):
    canaries_seconds: float | None = Field(None, description="Creating the canaries.")
    kexec_seconds: float | None = Field(
        None, description="From asking for the update to verifying in the next kernel."
    )
    verify_seconds: float | None = Field(None, description="Verifying every canary.")
    qemu_canary_seconds: float | None = Field(
        None, description="Starting (first step) and probing the QEMU canary before the kexec."
    )
    qemu_restore_seconds: float | None = Field(
        None, description="Restoring and probing the QEMU canary after the kexec."
    )


class QualificationStep(Response):
    index: int = Field(description="The step in the chain (0: A to B).")
    from_release: str = Field(description="The kernel the step left.")
    to_release: str = Field(description="The kernel it went to.")
    update: str | None = Field(None, description="The update that carried it (its id).")
    liveupdate_number: int | None = Field(None, description="The next kernel's number.")
    timings: StepTimings = Field(description="Seconds spent, per part.")
    checks: list[QualificationCheck] = Field(default_factory=list, description="Every check.")


class QualificationOptions(Response):
    large_mib: int = Field(description="Size of the large canary memfd.")
    many_files: int = Field(description="Files in the many-files session.")
    sessions: int = Field(description="One-file sessions asked for.")


class RecordedQualifyRequest(Response):
    chain: list[str] = Field(description="The kernel images asked for.")
    options: QualificationOptions = Field(description="The canaries' sizes.")
    with_vms: bool = Field(description="Whether preserved VMs were allowed.")
    qemu_canary: bool = Field(False, description="Whether a QEMU canary guest came along.")
    uid: int = Field(description="Who asked.")


class QualificationRecord(Response):
    kind: Literal["qualification"] = Field(description="This entry's kind.")
    id: str = Field(description="The qualification's id.")
    outcome: Literal["running", "passed", "failed"] = Field(description="How it ended.")
    reason: str = Field(description="Why it failed (empty when it passed).")
    request: RecordedQualifyRequest = Field(description="What was asked.")
    chain: list[QualifiedKernel] = Field(description="The chain's kernels, as declared.")
    steps: list[QualificationStep] = Field(description="Each step verified so far.")
    started_at: Time = Field(description="When it started.")
    ended_at: Time | None = Field(description="When it ended (null while running).")


class QualificationList(Response):
    qualifications: list[QualificationRecord] = Field(description="Newest first.")
