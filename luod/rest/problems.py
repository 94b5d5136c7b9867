"""Errors as RFC 9457 ``application/problem+json``, carrying luod's error codes.

The one place that maps a LuodError code to an HTTP status and a problem type. Every failure the
app can answer (luod's own, a malformed body, an unknown route, a bug) leaves as a problem
document whose ``type`` is ``urn:luod:problem:CODE`` (stable: one per kind of error) and whose
``title`` names that kind (``KINDS``), never the HTTP reason phrase; a field error says what is
wrong in luod's words, never a validator's internals. A client reads ``code`` and ``hint`` the
same way as on the VMM socket.
"""

from __future__ import annotations

import errno as E
from typing import Any, Final, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from luod.errors import LuodError
from luod.rest import models
from luod.rest.facade import PreflightRefused

MEDIA_TYPE: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:luod:problem:"


class Kind(NamedTuple):
    status: int
    title: str


KINDS: Final[dict[str, Kind]] = {
    "bad-request": Kind(422, "The request is not valid"),
    "bad-cursor": Kind(422, "The history cursor is not valid"),
    "bad-id": Kind(400, "The VM id is not valid"),
    "unauthorized": Kind(401, "A valid bearer token is needed"),
    "not-allowed": Kind(403, "Only root may do this"),
    "not-owner": Kind(403, "The VM belongs to another user"),
    "body-too-large": Kind(413, "The request body is too large"),
    "unknown-vm": Kind(404, "No such VM"),
    "not-found": Kind(404, "No such resource"),
    "method-not-allowed": Kind(405, "The resource does not take this method"),
    "update-running": Kind(409, "An update is already running"),
    "qualification-running": Kind(409, "A qualification is already running"),
    "vms-preserved": Kind(409, "VMs are preserved: qualify with --with-vms or on a canary"),
    "bad-chain": Kind(422, "The chain of kernels is not valid"),
    "qemu-canary-unavailable": Kind(422, "This host cannot run a QEMU canary"),
    "unknown-qualification": Kind(404, "No such qualification"),
    "wrong-state": Kind(409, "Not possible in the current state"),
    "wrong-mode": Kind(409, "Not possible in the VM's mode"),
    "vm-connected": Kind(409, "The VM's VMM is connected"),
    "unreclaimed-files": Kind(409, "The VM has files not reclaimed"),
    "preflight-failed": Kind(422, "The preflight checks refused the update"),
    "custody-unavailable": Kind(503, "luod's fd custody is unavailable"),
    "custody-full": Kind(503, "luod's fd custody is full"),
    "state-write-failed": Kind(503, "luod could not record the change in its state directory"),
    "rest-link": Kind(503, "luod is not answering its REST worker (it stops, or restarts)"),
    "internal": Kind(500, "A bug in luod"),
}
KERNEL_ERROR: Final = Kind(500, "The kernel refused a LUO operation")
OTHER_ERROR: Final = Kind(500, "luod could not do it")
CODE_OF_STATUS: Final = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def kind_of(code: str) -> Kind:
    return KINDS.get(code) or (KERNEL_ERROR if code.startswith("luo-") else OTHER_ERROR)


def problem(
    code: str, detail: str, *, hint: str = "", instance: str | None = None, status: int = 0
) -> models.Problem:
    kind = kind_of(code)
    return models.Problem(
        type=TYPE_PREFIX + code,
        title=kind.title,
        status=status or kind.status,
        detail=detail,
        instance=instance,
        code=code,
        hint=hint or None,
    )


def from_luod_error(exc: LuodError, instance: str | None = None) -> models.Problem:
    body = problem(exc.code, exc.message, hint=exc.hint, instance=instance)
    if exc.errno is not None:
        body.errno = exc.errno
        body.errno_name = E.errorcode.get(exc.errno, str(exc.errno))
    if isinstance(exc, PreflightRefused):
        body.checks = exc.checks
    return body


def respond(body: models.Problem, headers: dict[str, str] | None = None) -> ProblemResponse:
    content = body.model_dump(mode="json", by_alias=True, exclude_none=True)
    return ProblemResponse(content, status_code=body.status, headers=headers)


def field_errors(exc: RequestValidationError) -> list[models.FieldError]:
    """``body.deadline_seconds.rebooting``: where the request went wrong, as a dotted path,
    and what is wrong in luod's words."""
    found = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "[key]")
        found.append(models.FieldError(field=where or "body", message=message_of(error)))
    return found


MESSAGES: Final = {
    "missing": "required",
    "extra_forbidden": "not a field luod knows",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "float_type": "must be a number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "finite_number": "must be a finite number",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "json_invalid": "not valid JSON",
    "json_type": "not valid JSON",
}


def message_of(error: dict[str, Any]) -> str:
    """One validation error in words: no validator names, no pydantic prefixes or links."""
    kind, ctx = str(error.get("type", "")), error.get("ctx") or {}
    if kind in MESSAGES:
        return MESSAGES[kind]
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else "too short"
    if kind == "string_pattern_mismatch":
        return "must not contain a NUL character" if "x00" in str(ctx) else "malformed"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()), "")
        words = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}
        return f"must be {words.get(kind, '<=')} {bound}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', '')}".strip()
    text = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        text = text.removeprefix(prefix)
    return text


HEADERS: Final[dict[str, dict[str, str]]] = {
    "unauthorized": {"WWW-Authenticate": "Bearer"},
    # luod stops or restarts while its REST worker still answers: any HTTP client may try again
    "rest-link": {"Retry-After": "1"},
}
"""Headers that go with a code's problem document."""


async def _luod_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, LuodError)
    return respond(from_luod_error(exc, request.url.path), HEADERS.get(exc.code))


async def _invalid(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    return _invalid_request(request, field_errors(exc))


def _invalid_request(request: Request, errors: list[models.FieldError]) -> ProblemResponse:
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    body = problem(
        "bad-request", detail, hint="see errors[]: one per field", instance=request.url.path
    )
    body.errors = errors
    return respond(body)


async def _http(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:  # FastAPI's "error parsing the body": as every invalid body
        error = models.FieldError(field="body", message="not valid JSON")
        return _invalid_request(request, [error])
    code = CODE_OF_STATUS.get(exc.status_code, "internal")
    body = problem(
        code,
        _http_detail(request, exc),
        instance=request.url.path,
        status=exc.status_code,
        hint=_http_hint(exc),
    )
    return respond(body, dict(exc.headers) if exc.headers else None)


def _http_detail(request: Request, exc: HTTPException) -> str:
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return f"no resource at {request.url.path}"
    if exc.status_code == 405:
        return f"{where}: {request.url.path} does not take {request.method}"
    return f"{where} failed with HTTP status {exc.status_code}"


def _http_hint(exc: HTTPException) -> str:
    if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
        return f"it takes {exc.headers['Allow']}"
    return "see api/openapi.json for the resources and their methods"


async def _bug(request: Request, exc: Exception) -> ProblemResponse:
    body = problem("internal", f"{type(exc).__name__}: {exc}", hint="see luod's log")
    return respond(body)


def install(app: FastAPI) -> None:
    app.add_exception_handler(LuodError, _luod_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _bug)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses: each a problem+json document, its
    description naming the kinds of error (codes) that answer with it."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {
            "description": _described(status),
            "content": {MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }


def _described(status: int) -> str:
    codes = [f"`{code}` ({kind.title})" for code, kind in KINDS.items() if kind.status == status]
    if status == 500:
        codes += ["`luo-*` (a kernel error, with errno)", "any other luod error code"]
    return "Problem: " + ", ".join(codes)
