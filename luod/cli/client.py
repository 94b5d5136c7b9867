"""luoctl's side of the REST API: one call per resource, failures as two sharp exceptions.

``ApiError`` is luod saying no (a problem+json document, with its code and hint);
``Unreachable`` is the world failing (no socket, refused connection, not permitted, or luod's
REST worker saying luod does not answer it: 503 ``rest-link``), with its cause kept;
``LocalError`` is this side's configuration. Only luod.cli.main turns them into messages and
exit codes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx

from luod.cli import args, sse

DEFAULT_SOCKET: Final = Path("/run/luod/api.sock")
UNIX_BASE: Final = "http://luod"
NOT_ANSWERING: Final = frozenset({"rest-link"})
"""Codes of a 503 that mean luod itself did not answer (its REST worker did, while luod stops
or restarts): luod is unreachable, as when nothing listens."""


class LocalError(Exception):
    """Something on this side is wrong (an unreadable token file): a usage error."""


class ApiError(Exception):
    """luod refused: ``problem`` is its RFC 9457 document."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail", "")))
        self.problem = problem
        self.code = str(problem.get("code", "unknown"))
        self.status = int(problem.get("status", 0))


class Unreachable(Exception):
    """luod did not answer: nothing listens there, or this user may not connect."""

    def __init__(self, where: str, cause: Exception) -> None:
        super().__init__(f"cannot reach luod at {where}: {cause}")
        self.where = where


@dataclass(frozen=True)
class Target:
    """Where luod is: its unix socket, or a URL with a bearer token file."""

    socket: Path = DEFAULT_SOCKET
    url: str | None = None
    token_file: Path | None = None
    timeout: float = 30.0

    def describe(self) -> str:
        return self.url or str(self.socket)

    def client(self) -> httpx.Client:
        timeout = httpx.Timeout(self.timeout, read=None)  # the event stream waits for events
        if self.url is None:
            transport = httpx.HTTPTransport(uds=str(self.socket))
            return httpx.Client(transport=transport, base_url=UNIX_BASE, timeout=timeout)
        headers = {"Authorization": f"Bearer {self._token()}"} if self.token_file else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _token(self) -> str:
        assert self.token_file is not None
        try:
            return args.read_token(self.token_file)
        except ValueError as exc:
            raise LocalError(str(exc)) from exc


class Api:
    def __init__(self, http: httpx.Client, where: str) -> None:
        self.http = http
        self.where = where
        self.retry_seconds: float | None = None  # the event stream's retry: (luod's advice)

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def events(self, last_id: str | None = None) -> Iterator[sse.Event]:
        """Follow /v1/events until luod ends the stream (or goes away: Unreachable); with
        ``last_id``, from the event after that one (as far as luod still holds them)."""
        headers = {"Last-Event-ID": last_id} if last_id else None
        try:
            with self.http.stream("GET", "/v1/events", headers=headers) as reply:
                if reply.is_error:
                    reply.read()
                    raise _refusal(reply, self.where)
                parser = sse.EventParser()
                for event in sse.events(reply.iter_lines(), parser):
                    if parser.retry_ms is not None:
                        self.retry_seconds = parser.retry_ms / 1000
                    yield event
        except httpx.TransportError as exc:
            raise Unreachable(self.where, exc) from exc

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            reply = self.http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise Unreachable(self.where, exc) from exc
        if reply.is_error:
            raise _refusal(reply, self.where)
        return reply.json()


def vm_path(vm_id: str) -> str:
    """A VM's resource; the id is checked (luod.cli.args.vm_id) and escaped all the same."""
    return "/v1/vms/" + quote(vm_id, safe="")


def _refusal(reply: httpx.Response, where: str) -> ApiError | Unreachable:
    """luod's refusal; or, when its REST worker says luod does not answer, Unreachable."""
    refused = ApiError(_problem(reply))
    if reply.status_code == 503 and refused.code in NOT_ANSWERING:
        return Unreachable(where, refused)
    return refused


def _problem(reply: httpx.Response) -> dict[str, Any]:
    """The problem document, or one made up when something else (a proxy) answered."""
    try:
        problem = reply.json()
    except json.JSONDecodeError:
        problem = None
    if isinstance(problem, dict) and "code" in problem:
        return problem
    return {"status": reply.status_code, "code": "http-error", "detail": reply.text[:200]}
