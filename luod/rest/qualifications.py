"""``/v1/qualifications``: qualify a live update from kernel A to kernel B (issue 14 §1).

Thin: each route is one facade call; luod.daemon.qualification decides."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam

from luod.rest import problems
from luod.rest import qualification_models as qm
from luod.rest.auth import peer_uid
from luod.rest.facade import RestFacade

QID = r"^[0-9a-f]{1,32}$"


def routes(router: APIRouter, facade: RestFacade) -> None:
    @router.post(
        "/qualifications", status_code=202, response_model=qm.QualificationRecord,
        operation_id="startQualification", tags=["qualification"],
        summary="Qualify a live update along a chain of kernels",
        responses={
            202: {"description": "Started: the record, outcome running"},
            **problems.responses(403, 409, 422),
        },
    )  # fmt: skip
    async def start(body: qm.QualifyRequest, request: Request) -> qm.QualificationRecord:
        """Preserve canary sessions (memfds of several sizes, sealed, `MFD_NOEXEC_SEAL`,
        sparse, written after preserve, an empty session, many files, many sessions), live
        update into each next kernel of `chain`, and check every canary byte and property
        after each kexec. Each kernel of `chain` may carry its initrd and command line.
        `qemu_canary`: a real QEMU guest crosses each kexec too, checked after each. The report
        lands in the history (kind `qualification`). 409 `vms-preserved` while VMs are
        preserved, unless `with_vms`; 422 `bad-chain` (an unreadable initrd, a command line
        without `liveupdate=on`), `qemu-canary-unavailable` (no QEMU on this host)."""
        return await facade.qualify(body, peer_uid(request))

    @router.get(
        "/qualifications", response_model=qm.QualificationList,
        operation_id="listQualifications", tags=["qualification"],
        summary="Qualifications: the running one and those on record",
    )  # fmt: skip
    async def listing() -> qm.QualificationList:
        """Every qualification, newest first (a running one first)."""
        return await facade.qualifications()

    @router.get(
        "/qualifications/{qid}", response_model=qm.QualificationRecord,
        operation_id="getQualification", tags=["qualification"],
        summary="One qualification's report", responses=problems.responses(404, 422),
    )  # fmt: skip
    async def one(
        qid: Annotated[str, PathParam(pattern=QID, description="The qualification's id.")],
    ) -> qm.QualificationRecord:
        """Its chain, each step's checks (expected, actual), timings; 404
        `unknown-qualification`."""
        return await facade.qualification(qid)
