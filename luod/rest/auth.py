"""Who may use the REST API: anyone who can open the unix socket (its mode and group guard
it), and, over TCP, whoever presents the bearer token from luod's token file.

The TCP listener marks each request's ASGI scope with the token it requires
(``listener_app``), and with PUBLIC_KEY when ``/metrics`` and ``/v1/health`` are public there;
the ``require_bearer`` dependency checks it (luod.rest.middleware checked it already, before
reading the body). Requests over the unix socket
carry no mark, so they need no token. The scope also carries the caller's uid when the
server learned it from SO_PEERCRED (see luod.rest.serve).
"""

from __future__ import annotations

import hmac
import stat
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from luod.errors import LuodError
from luod.rest.facade import RestFacade

TOKEN_KEY: Final = "luod.bearer"
PEER_UID_KEY: Final = "luod.peer_uid"
PUBLIC_KEY: Final = "luod.public"
PUBLIC_PATHS: Final = frozenset({"/metrics", "/v1/health"})
"""Served without the token on a listener marked PUBLIC_KEY (``api.public_metrics``): scrapers
and load balancers carry no secrets, and these two reveal nothing an update depends on."""
PUBLIC_SECURITY: Final[dict[str, Any]] = {"security": [{}, {"HTTPBearer": []}]}
"""Their OpenAPI security: none (when public) or the bearer token."""
MIN_TOKEN_CHARS: Final = 16

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="Over TCP only: the token in luod's token file. The unix socket needs none.",
)


def listener_app(app: ASGIApp, **marks: Any) -> ASGIApp:
    """``app`` with ``marks`` (TOKEN_KEY, PEER_UID_KEY) added to each request's scope."""

    async def marked(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, **marks}, receive, send)

    return marked


async def require_bearer(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    expected = request.scope.get(TOKEN_KEY)
    if expected is None:
        return
    if request.scope.get(PUBLIC_KEY) and request.url.path in PUBLIC_PATHS:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), str(expected).encode()):
        raise LuodError(
            "unauthorized",
            "missing or wrong bearer token" if given else "no bearer token",
            "send 'Authorization: Bearer <token>' with the token from luod's token file",
        )


def peer_uid(request: Request) -> int | None:
    uid = request.scope.get(PEER_UID_KEY)
    return uid if isinstance(uid, int) else None


def require_operator(facade: RestFacade, request: Request, what: str) -> None:
    """``not-allowed`` unless the caller sees every owner's VMs (luod.core.access)."""
    uid = peer_uid(request)
    if not facade.sees_all(uid):
        raise LuodError(
            "not-allowed",
            f"{what} shows every owner's VMs: uid {uid} is not in access.uids",
            "ask the host operator, or add the uid to access.uids in luod.toml",
        )


def require_owner(facade: RestFacade, request: Request, owner: int, vm_id: str) -> None:
    """``not-owner`` for another uid's VM, unless the caller sees every owner's VMs."""
    uid = peer_uid(request)
    if uid != owner and not facade.sees_all(uid):
        raise LuodError(
            "not-owner",
            f"VM {vm_id!r} belongs to uid {owner}, not {uid}",
            "a VM id is bound to the uid that registered it first",
        )


def read_token(path: Path) -> str:
    """The bearer token in ``path``; refused when every user may read it, or it is short."""
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise LuodError(
            "rest-token-unreadable",
            f"cannot read the REST token file {path}: {exc.strerror}",
            "create it (e.g. 'head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE')",
            exc.errno,
        ) from exc
    if mode & stat.S_IRWXO:
        raise LuodError(
            "rest-token-unsafe",
            f"the REST token file {path} is open to every user (mode {mode & 0o777:o})",
            f"chmod o-rwx {path} (600, or 640 for a group of operators)",
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise LuodError(
            "rest-token-unsafe",
            f"the REST token in {path} has {len(token)} characters",
            f"use at least {MIN_TOKEN_CHARS} random characters",
        )
    return token
