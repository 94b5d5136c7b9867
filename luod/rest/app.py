"""The REST app: one route per resource, each a direct call to the facade (no logic here).

Every route is ``async def`` on purpose: FastAPI runs plain ``def`` routes in a thread pool,
and the facade's calls are coroutines (they call luod across the link, luod.rest.remote).
Read routes answer with JSON encoded once per model (``_Encoded``): the worker's facade hands
out the same snapshot until the next one, and FastAPI would validate and encode it each time.

``create_app(facade)`` builds it; nothing happens at import. Errors are problem+json
(luod.rest.problems); auth is a dependency that only bites on the TCP listener (luod.rest.auth).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter
from starlette.types import ASGIApp, Receive, Scope, Send

import luod
from luod.core.model import VM_ID
from luod.rest import models, problems, qualifications, records
from luod.rest.auth import (
    PEER_UID_KEY,
    PUBLIC_SECURITY,
    TOKEN_KEY,
    peer_uid,
    require_bearer,
    require_operator,
    require_owner,
)
from luod.rest.events import KEEPALIVE, RETRY, sse
from luod.rest.facade import EventStream, RestFacade
from luod.rest.metrics import Scrape

KEEPALIVE_SECONDS: Final = 15.0
ALWAYS: Final = (401, 500)
TAGS: Final = [
    {"name": "host", "description": "luod and the host: health, status, the VMs luod holds."},
    {"name": "update", "description": "Preflight, start, follow and abort a live update."},
    {"name": "history", "description": "Updates that ended, newest first, paged by cursor."},
    {"name": "metrics", "description": "Prometheus metrics of luod and its updates."},
    {"name": "qualification", "description": "Qualify a live update from kernel A to B."},
]
DESCRIPTION: Final = """luod's REST API: the contract for fleet tooling (and luoctl).

- Over the unix socket (default /run/luod/api.sock) it needs no token: the socket's mode and
  group guard it, and mutations need root (SO_PEERCRED). Over TCP every request needs the
  bearer token, except `/v1/health` and `/metrics` when luod.toml says
  `api.public_metrics = true`.
- Times are RFC 3339 strings in UTC; durations are seconds, in fields named `*_seconds`.
- Errors are RFC 9457 `application/problem+json` documents: `type` is `urn:luod:problem:CODE`,
  one per kind of error, `code` is luod's error code (as on the VMM socket), `hint` says what
  to do.
- Enumerations (phase, VM state, outcome, reason code) may grow: treat an unknown value as
  "something else", never as an error."""
REF: Final = "#/components/schemas/{model}"
SSE_REF: Final = "#/components/schemas/ServerSentEvent"
TIME: Final = TypeAdapter(models.Time | None)
SSE_SCHEMA: Final = {
    "description": "One event of the stream: its name, and its data as one JSON object.",
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "description": "The event's name (its `event:` line).",
            "type": "string",
            "examples": ["STATE", "PHASE", "VM_PROGRESS", "UPDATE_END"],
        },
        "data": {
            "description": "The event as one JSON object (its `data:` line).",
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/Event"},
        },
    },
}
SSE_DOC: Final = """Server-Sent Events: `retry:` first, then `STATE` (the phase and the running
or last update, as `GET /v1/update`, and luod's time `at`), then the update events as on the
VMM socket's WATCH: `PHASE` {from, to, reason, at, deadline_seconds}, `VM_PROGRESS` {id, step,
note?, at}, `UPDATE_END` {id, outcome, reason}. Each event's `data` is one JSON object with its
`event` name, and each event has an `id:`. A client that reconnects with `Last-Event-ID` gets
every event after that one that luod still holds (the last 1024), without a STATE first; if
luod no longer holds them all (or restarted), the stream starts with STATE again. Comment
lines keep the connection alive. When luod stops, `SHUTDOWN` is the last event and the stream
ends at once. The stream also ends if the client falls too far behind: reconnect."""


def create_app(facade: RestFacade, *, keepalive: float = KEEPALIVE_SECONDS) -> FastAPI:
    app = FastAPI(
        title="luod",
        version=luod.__version__,
        summary="Live updates of a hypervisor host's kernel (Linux Live Update Orchestrator).",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        dependencies=[Depends(require_bearer)],
        docs_url=None,  # the HTML docs load scripts from a CDN: not from a hypervisor host
        redoc_url=None,
    )
    problems.install(app)
    app.add_middleware(SnapshotReads, facade=facade)
    app.include_router(_v1(facade, keepalive), prefix="/v1")
    _metrics(app, facade)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _v1(facade: RestFacade, keepalive: float) -> APIRouter:
    router = APIRouter(responses=problems.responses(*ALWAYS))
    _read_routes(router, facade)
    _update_routes(router, facade)
    qualifications.routes(router, facade)

    @router.get(
        "/events",
        operation_id="watchEvents",
        tags=["update"],
        summary="Follow the updates live",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "The event stream, until the client goes or falls behind, or "
                "luod stops (after SHUTDOWN).",
                "content": {"text/event-stream": {"schema": {"$ref": SSE_REF}}},
            },
            **problems.responses(422),
        },
        description=SSE_DOC,
    )
    async def events(
        request: Request,
        last_event_id: Annotated[
            str | None,
            Header(max_length=64, description="The id of the last event the client got: the "
                   "stream resumes after it (no STATE first) if luod still holds what followed."),
        ] = None,
    ) -> StreamingResponse:  # fmt: skip
        require_operator(facade, request, "the event stream")
        watch = await facade.watch(last_event_id)
        first = None if watch.resumed else _state_event(watch.state)
        return StreamingResponse(
            _event_stream(watch.stream, (watch.state_id, first), keepalive),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router


def _read_routes(router: APIRouter, facade: RestFacade) -> None:
    @router.get(
        "/health",
        operation_id="getHealth",
        tags=["host"],
        summary="Is luod answering",
        openapi_extra=PUBLIC_SECURITY,
    )
    async def health() -> models.Health:
        """luod answers, and its version (for load balancers and probes: over TCP it needs no
        token when `api.public_metrics` is on)."""
        return models.Health(version=facade.version())

    status_json, vms_json, vm_json = _Encoded(), _Encoded(), _Encoded()

    @router.get(
        "/status", response_model=models.Status, operation_id="getStatus", tags=["host"],
        summary="luod, the running kernel, the update phase",
    )  # fmt: skip
    async def status() -> Response:
        """The host as luod sees it: its kernel and LUO support, the update phase, how many
        VMs, sessions, files and bytes luod holds."""
        return status_json(await facade.status())

    @router.get(
        "/vms", response_model=models.VmList, operation_id="listVms", tags=["host"],
        summary="The VMs luod holds",
    )  # fmt: skip
    async def vms(request: Request) -> Response:
        """Every VM luod knows, with its state and its preserved files (over the unix socket,
        a uid outside `access.uids` sees only its own VMs)."""
        uid = peer_uid(request)
        listing = await facade.vms()
        if facade.sees_all(uid):
            return vms_json(listing)
        return _Encoded()(models.VmList(vms=[vm for vm in listing.vms if vm.owner_uid == uid]))

    @router.get(
        "/vms/{vm_id}", response_model=models.Vm, operation_id="getVm", tags=["host"],
        summary="One VM", responses=problems.responses(404, 422),
    )  # fmt: skip
    async def vm(
        vm_id: Annotated[str, PathParam(pattern=f"^{VM_ID.pattern}$", description="The VM's id.")],
        request: Request,
    ) -> Response:
        """One VM, its state and its files; 404 `unknown-vm` if luod does not know it, 403
        `not-owner` if it is another uid's (for a uid outside `access.uids`)."""
        found = await facade.vm(vm_id)
        require_owner(facade, request, found.owner_uid, vm_id)
        return vm_json(found)

    @router.delete(
        "/vms/{vm_id}", operation_id="dropVm", tags=["host"],
        summary="Drop a VM whose VMM is gone", responses=problems.responses(403, 404, 409, 422),
    )  # fmt: skip
    async def drop(
        vm_id: Annotated[str, PathParam(pattern=f"^{VM_ID.pattern}$", description="The VM's id.")],
        request: Request,
        force: Annotated[
            bool, Query(description="Drop it even while its VMM is connected, an update "
                        "runs, or files it came through the update with are not reclaimed.")
        ] = False,
    ) -> models.DropResult:  # fmt: skip
        """Unpreserve and forget a VM (root, or the bearer token): its LUO session is closed
        (finished, for a VM that came through an update) and luod forgets it; the answer says
        what was released. 409 `vm-connected`, `update-running` or `unreclaimed-files` unless
        `force`; 409 `wrong-state` during the kexec itself."""
        return await facade.drop_vm(vm_id, force, peer_uid(request))

    @router.get(
        "/history", response_model=models.History, operation_id="getHistory",
        tags=["history"], summary="Updates that ended", responses=problems.responses(422),
    )  # fmt: skip
    async def history(
        request: Request,
        cursor: Annotated[
            str | None,
            Query(max_length=64, description="next_cursor of the previous page."),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=records.MAX_PAGE, description="Records per page at most.")
        ] = records.DEFAULT_PAGE,
        kind: Annotated[
            models.HistoryKind,
            Query(description="update (the default), qualification, or all."),
        ] = "update",
    ) -> models.History:
        """Updates that ended (completed, aborted, refused, failed), newest first, `limit` at
        a time; follow `next_cursor` for older ones. `kind=qualification` lists the
        qualifications instead, `kind=all` both. 422 `bad-cursor` for a cursor luod did
        not hand out (a cursor belongs to one kind); 403 `not-allowed` for a uid outside
        `access.uids`."""
        require_operator(facade, request, "the history")
        return await facade.history(kind, cursor, limit)

    @router.post(
        "/preflight", operation_id="runPreflight", tags=["update"],
        summary="Check a next kernel", responses=problems.responses(403, 422),
    )  # fmt: skip
    async def preflight(body: models.PreflightRequest, request: Request) -> models.PreflightResult:
        """Run every preflight check for this next kernel (root: it reads files as root);
        nothing starts, nothing changes. `ok` is false when a check fails (the update would
        be refused)."""
        return await facade.preflight(body, peer_uid(request))


class SnapshotReads:
    """``GET /v1/status`` (and the other plain reads) over the unix socket, answered without
    FastAPI's routing and dependency solving: more than half of what a poll costs, in GIL time
    that luod's main loop waits for (bench/rest_load.py). The same facade call and encoding as
    the route, for what needs nothing the route adds: no parameter, no bearer token (the TCP
    listener marks its requests with one). Anything else, and any error, goes to FastAPI."""

    def __init__(self, app: ASGIApp, facade: RestFacade) -> None:
        self.app = app
        self.facade = facade
        self.reads: dict[str, tuple[Callable[[], Awaitable[models.Response]], _Encoded]] = {
            "/v1/status": (facade.status, _Encoded()),
            "/v1/vms": (facade.vms, _Encoded()),
            "/v1/update": (facade.update, _Encoded()),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = None
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and TOKEN_KEY not in scope
            and self.facade.sees_all(scope.get(PEER_UID_KEY))  # else: the route filters
        ):
            read = self.reads.get(scope["path"])
        if read is None:
            return await self.app(scope, receive, send)
        call, encoded = read
        try:
            response = encoded(await call())
        except Exception:  # FastAPI asks again, and answers the problem
            return await self.app(scope, receive, send)
        await response(scope, receive, send)


class _Encoded:
    """A route's JSON body, encoded again only when the facade hands out another model (a
    snapshot is the same object until the next one). The model is already a valid response:
    FastAPI's validation and encoding of it again is skipped by answering a ``Response``."""

    def __init__(self) -> None:
        self._model: models.Response | None = None
        self._body = b""

    def __call__(self, model: models.Response) -> Response:
        if model is not self._model:
            self._body, self._model = model.model_dump_json(by_alias=True).encode(), model
        return Response(self._body, media_type="application/json")


def _update_routes(router: APIRouter, facade: RestFacade) -> None:
    @router.post(
        "/update",
        status_code=202,
        response_model=models.UpdateRecord,
        operation_id="startUpdate",
        tags=["update"],
        summary="Start an update",
        responses={
            200: {"model": models.PreflightResult, "description": "dry_run: the checks"},
            202: {"description": "Started: the update record, in phase preparing"},
            **problems.responses(403, 409, 422),
        },
    )
    async def start(body: models.UpdateStartRequest, request: Request) -> Response:
        """Start an update (root): preflight first (a refusal is 422 `preflight-failed` with
        the checks), then prepare, freeze and kexec in the background; follow it with
        `GET /v1/update` or `GET /v1/events`. 409 `update-running` while one runs."""
        if body.dry_run:
            return JSONResponse(_dump(await facade.preflight(body, peer_uid(request))))
        record = await facade.start_update(body, peer_uid(request))
        return JSONResponse(_dump(record), status_code=202, headers={"Location": "/v1/update"})

    @router.get(
        "/update", operation_id="getUpdate", tags=["update"],
        summary="The running or last update",
    )  # fmt: skip
    async def current() -> models.UpdateState:
        """The phase luod is in, and the running update (or the last one, once it ended;
        after a kexec, the update being reclaimed)."""
        return await facade.update()

    @router.post(
        "/update/abort", operation_id="abortUpdate", tags=["update"],
        summary="Abort the running update", responses=problems.responses(403, 409, 422),
    )  # fmt: skip
    async def abort(
        request: Request, body: models.AbortRequest | None = None
    ) -> models.AbortResult:
        """Abort the running update (root, before the kexec); answers once every VM got
        RESUME. 409 `wrong-state` when there is nothing to abort."""
        return await facade.abort(body.reason if body else None, peer_uid(request))

    @router.delete(
        "/update", operation_id="cancelUpdate", tags=["update"],
        summary="Abort the running update", responses=problems.responses(403, 409),
    )  # fmt: skip
    async def delete(request: Request) -> models.AbortResult:
        """The same as `POST /v1/update/abort` without a reason."""
        return await facade.abort(None, peer_uid(request))


def _metrics(app: FastAPI, facade: RestFacade) -> None:
    @app.get(
        "/metrics",
        operation_id="getMetrics",
        tags=["metrics"],
        summary="Prometheus metrics",
        response_class=Response,
        openapi_extra=PUBLIC_SECURITY,
        responses={
            200: {
                "description": "The metrics, in Prometheus' text format.",
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            },
            **problems.responses(*ALWAYS),
        },
    )
    async def metrics(request: Request) -> Response:
        """Prometheus metrics: build info (version, kernel), phase, VMs by state, sessions,
        preserved bytes, updates by outcome and by reason, histograms of the blackout per VM
        and of each phase's duration, the last update's blackout per VM, process metrics.
        Over TCP it needs no token when `api.public_metrics` is on; over the unix socket a uid
        outside `access.uids` gets 403 (the metrics name every VM)."""
        require_operator(facade, request, "the metrics")
        status, vms = await facade.status(), await facade.vms()
        ended = await facade.ended_updates()
        return Response(generate_latest(Scrape(status, vms, ended)), media_type=CONTENT_TYPE_LATEST)


async def _event_stream(
    stream: EventStream, first: tuple[str, dict[str, Any] | None], keepalive: float
) -> AsyncIterator[bytes]:
    """``retry:``, then the STATE (unless the stream resumes), then the events, each with its
    id; it ends after SHUTDOWN (luod stops) or when the client fell too far behind."""
    try:
        state_id, state = first
        yield RETRY + (sse(state, state_id) if state is not None else b"")
        while True:
            try:
                event_id, event = await asyncio.wait_for(anext(stream), keepalive)
            except TimeoutError:
                yield KEEPALIVE
                continue
            except StopAsyncIteration:
                return
            yield sse(_rest_event(event), event_id)
    finally:
        stream.close()


def _state_event(state: models.UpdateState) -> dict[str, Any]:
    """STATE: where things stand, and luod's time now (a view counts from it)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"event": "STATE", **_dump(state), "at": now}


def _rest_event(event: dict[str, Any]) -> dict[str, Any]:
    """A driver event as the API describes it: a clock stamp as an RFC 3339 time."""
    if isinstance(event.get("at"), dict):
        return {**event, "at": TIME.dump_python(records.time_of(event["at"]), mode="json")}
    return event


def _dump(model: models.Response) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus what no route returns as a model: the Problem document of the
    error responses, and the events of the SSE stream."""
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            tags=app.openapi_tags,
            routes=app.routes,
        )
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        extra: dict[str, Any] = {"Problem": models.Problem, "Event": models.Event}
        for name, shape in extra.items():
            schema = TypeAdapter(shape).json_schema(ref_template=REF, mode="serialization")
            schemas.update(schema.pop("$defs", {}))
            schemas[name] = schema
        schemas["ServerSentEvent"] = SSE_SCHEMA
        app.openapi_schema = spec
    return app.openapi_schema
