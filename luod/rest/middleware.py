"""ASGI guards in front of the REST app, before FastAPI reads a byte of the body:

- ``BearerGate`` (the TCP listener): the bearer token is checked from the request's headers
  alone; a request without it gets 401 at once, its body never read (FastAPI would read a
  300 MB body into memory first, and only then run the dependency that refuses it). Every path
  needs it, ``/openapi.json`` included, except ``/metrics`` and ``/v1/health`` when they are
  public (``api.public_metrics``).
- ``BodyLimit`` (every listener): a body above ``api.max_body_bytes`` gets 413, by its
  Content-Length before anything is read, or once a chunked body passes the limit.

Answers are problem+json documents, as the app's own (luod.rest.problems).
"""

from __future__ import annotations

import contextlib
import hmac
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from luod.rest import models, problems
from luod.rest.auth import PUBLIC_PATHS

DEFAULT_MAX_BODY: Final = 64 * 1024
"""Every request body luod takes is a few hundred bytes (a kernel path, a command line)."""
DEFAULT_MAX_CONNECTIONS: Final = 64
"""Connections (and requests) served at once per listener; more get 503 (uvicorn's
``limit_concurrency``)."""
PROBLEM_HEADERS: Final = [(b"content-type", problems.MEDIA_TYPE.encode())]


class BodyTooLarge(Exception):
    """Raised into the app when a chunked body passes the limit; whatever the app answers to
    that is replaced by the 413."""


class BearerGate:
    """Let through only requests with ``Authorization: Bearer <token>`` (constant-time)."""

    def __init__(self, app: ASGIApp, token: str, *, public: bool = False) -> None:
        self.app = app
        self.expected = token.encode()
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            return await self.app(scope, receive, send)
        given = _header(scope, b"authorization")
        detail = "missing or wrong bearer token" if given else "no bearer token"
        body = problems.problem(
            "unauthorized",
            detail,
            hint="send 'Authorization: Bearer <token>' with the token from luod's token file",
            instance=scope.get("path"),
        )
        await _answer(send, body, [(b"www-authenticate", b"Bearer")])

    def _allowed(self, scope: Scope) -> bool:
        if self.public and scope.get("path") in PUBLIC_PATHS:
            return True
        scheme, _, given = (_header(scope, b"authorization") or b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.expected)


class BodyLimit:
    """413 for a request body above ``limit`` bytes, before the app reads it."""

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _answer(send, self._problem(scope))
        seen, too_large, answered = 0, False, False

        async def counted() -> Message:
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                too_large = True
                raise BodyTooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal answered
            if too_large:  # the app answers the broken read its way (FastAPI: 422): ours
                if not answered and message["type"] == "http.response.start":
                    answered = True
                    await _answer(send, self._problem(scope))
                return
            answered = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # the app let it through: answered below
            await self.app(scope, counted, sending)
        if too_large and not answered:
            await _answer(send, self._problem(scope))

    def _problem(self, scope: Scope) -> models.Problem:
        return problems.problem(
            "body-too-large",
            f"the request body is larger than {self.limit} bytes",
            hint="luod's requests are small; the limit is api.max_body_bytes in luod.toml",
            instance=scope.get("path"),
        )


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


async def _answer(
    send: Send, body: models.Problem, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    content = body.model_dump_json(by_alias=True, exclude_none=True).encode()
    await send(
        {
            "type": "http.response.start",
            "status": body.status,
            "headers": [
                *PROBLEM_HEADERS,
                (b"content-length", str(len(content)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
