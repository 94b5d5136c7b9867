"""Errors as RFC 9457 ``application/problem+json``, carrying luod's error codes.

The one place that maps a LuodError code to an HTTP status. Every failure the app can answer
(luod's own, a malformed body, an unknown route, a bug) leaves as a problem document, so a
client reads ``code`` and ``hint`` the same way as on the VMM socket.
"""

from __future__ import annotations

import errno as E
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from luod.errors import LuodError
from luod.rest import models
from luod.rest.facade import PreflightRefused

MEDIA_TYPE: Final = "application/problem+json"
STATUS_OF: Final[dict[str, int]] = {
    "bad-request": 400,
    "bad-id": 400,
    "unauthorized": 401,
    "not-allowed": 403,
    "not-owner": 403,
    "unknown-vm": 404,
    "not-found": 404,
    "method-not-allowed": 405,
    "update-running": 409,
    "wrong-state": 409,
    "wrong-mode": 409,
    "preflight-failed": 422,
    "custody-unavailable": 503,
    "custody-full": 503,
}
CODE_OF_STATUS: Final = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def status_of(code: str) -> int:
    return STATUS_OF.get(code, 500)


def problem(
    status: int, code: str, detail: str, *, hint: str = "", instance: str | None = None
) -> models.Problem:
    return models.Problem(
        type=f"urn:luod:problem:{code}",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance,
        code=code,
        hint=hint or None,
    )


def from_luod_error(exc: LuodError, instance: str | None = None) -> models.Problem:
    body = problem(status_of(exc.code), exc.code, exc.message, hint=exc.hint, instance=instance)
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
    """``body.deadlines.rebooting``: where the request went wrong, as a dotted path."""
    found = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "[key]")
        found.append(models.FieldError(field=where or "body", message=str(error.get("msg", ""))))
    return found


async def _luod_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, LuodError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.code == "unauthorized" else None
    return respond(from_luod_error(exc, request.url.path), headers)


async def _invalid(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    return _invalid_body(request, field_errors(exc))


def _invalid_body(request: Request, errors: list[models.FieldError]) -> ProblemResponse:
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    body = problem(
        422, "bad-request", detail, hint="see errors[]: one per field", instance=request.url.path
    )
    body.errors = errors
    return respond(body)


async def _http(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:  # FastAPI's "error parsing the body": as every invalid body
        return _invalid_body(request, [models.FieldError(field="body", message=str(exc.detail))])
    code = CODE_OF_STATUS.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    body = problem(exc.status_code, code, detail, instance=request.url.path)
    return respond(body, dict(exc.headers) if exc.headers else None)


async def _bug(request: Request, exc: Exception) -> ProblemResponse:
    body = problem(
        500, "internal", f"{type(exc).__name__}: {exc}", hint="a bug in luod; see its log"
    )
    return respond(body)


def install(app: FastAPI) -> None:
    app.add_exception_handler(LuodError, _luod_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _bug)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses: each a problem+json document."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }
