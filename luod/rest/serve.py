"""Serving the REST app with uvicorn on a unix socket, and optionally TCP (luod runs this in its
REST worker process, luod.rest.worker).

- The unix socket (default /run/luod/api.sock) is created aside, given mode 0660 and group
  ``luod``, then renamed into place: it never exists with looser permissions, and whoever can
  open it may use the API (mutations still need root: SO_PEERCRED gives the caller's uid).
- TCP needs a bearer token from a file (refused without one), checked from the headers before
  any body is read (luod.rest.middleware), and takes TLS when a certificate and key are
  configured (without, luod warns: the token crosses the network in clear).
- Every listener: request bodies above ``max_body`` get 413 unread, and at most
  ``max_connections`` connections are served at once (more get 503).
- uvicorn does not touch luod's signals (luod defers SIGTERM during a freeze): the server stops
  when its task is cancelled, giving open requests (an SSE stream) a second to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from luod.errors import LuodError
from luod.fdpass import peer_credentials
from luod.rest.auth import PEER_UID_KEY, PUBLIC_KEY, TOKEN_KEY, listener_app, read_token
from luod.rest.middleware import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    BearerGate,
    BodyLimit,
)

log = structlog.get_logger("luod.rest")
DEFAULT_SOCKET: Final = Path("/run/luod/api.sock")
SOCKET_MODE: Final = 0o660
SOCKET_GROUP: Final = "luod"
GRACE_SECONDS: Final = 1


@dataclass
class Endpoints:
    """Where the API listens, once it does (given to ``ready``)."""

    unix: Path | None = None
    tcp: tuple[str, int] | None = None
    tls: bool = False
    sockets: list[socket.socket] = field(default_factory=list, repr=False)


class PeerCredProtocol(HttpToolsProtocol):
    """HTTP/1.1 over the unix socket, marking each request with its client's uid. httptools,
    not h11: its C parser halves the CPU a request costs (bench/rest_load.py)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            _, uid, _ = peer_credentials(sock)
            self.app = listener_app(self.app, **{PEER_UID_KEY: uid})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # luod owns SIGTERM/SIGINT: its main loop stops us by cancelling


def _bound_path(sock: socket.socket) -> str | None:
    """The path systemd bound an activated unix socket to (None: abstract or unnamed)."""
    name = sock.getsockname()
    return name if isinstance(name, str) and name else None


async def serve_rest(
    app: ASGIApp,
    *,
    unix_path: Path | None = DEFAULT_SOCKET,
    tcp: tuple[str, int] | None = None,
    token_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    group: str | None = SOCKET_GROUP,
    ready: Callable[[Endpoints], None] | None = None,
    unix_sock: socket.socket | None = None,
    public_metrics: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> None:
    """Serve ``app`` until cancelled. Raises LuodError for a configuration it refuses.

    ``unix_sock``: a listening socket from systemd (luod-api.socket) instead of binding
    ``unix_path``; its path then belongs to systemd and is left in place.
    ``public_metrics``: on TCP, ``/metrics`` and ``/v1/health`` need no token.
    ``max_body``: larger request bodies get 413 unread; ``max_connections``: per listener,
    more get 503 (luod.rest.middleware).
    """
    token = _tcp_token(tcp, token_file)
    tls = _tls(tls_cert, tls_key)
    endpoints = Endpoints(tls=tls is not None)
    limits = {"limit_concurrency": max_connections}
    app = BodyLimit(app, max_body)
    try:
        servers = []
        if unix_sock is not None:
            endpoints.sockets = [*endpoints.sockets, unix_sock]
            servers.append((_server(app, http=PeerCredProtocol, **limits), unix_sock))
        elif unix_path is not None:
            sock = bind_unix(unix_path, group)
            endpoints.unix, endpoints.sockets = unix_path, [*endpoints.sockets, sock]
            servers.append((_server(app, http=PeerCredProtocol, **limits), sock))
        if tcp is not None:
            sock = socket.create_server(tcp, family=_family(tcp[0]), backlog=128)
            endpoints.tcp, endpoints.sockets = sock.getsockname()[:2], [*endpoints.sockets, sock]
            marks = {TOKEN_KEY: token, PUBLIC_KEY: public_metrics}
            assert token is not None  # _tcp_token refuses TCP without one
            gated = BearerGate(listener_app(app, **marks), token, public=public_metrics)
            servers.append((_server(gated, **limits, **tls or {}), sock))
            if tls is None:
                log.warning(
                    "rest-tcp-without-tls",
                    tcp=endpoints.tcp,
                    hint="the bearer token crosses the network in clear: configure "
                    "api.tls_cert and api.tls_key, or listen on localhost only",
                )
        if ready is not None:
            ready(endpoints)
        unix = endpoints.unix or (_bound_path(unix_sock) if unix_sock is not None else None)
        log.info(
            "rest-serving",
            unix=None if unix is None else str(unix),
            activated=unix_sock is not None,
            tcp=endpoints.tcp,
            tls=endpoints.tls,
        )
        async with asyncio.TaskGroup() as tasks:
            for server, sock in servers:
                tasks.create_task(_run(server, sock))
    finally:
        for sock in endpoints.sockets:
            sock.close()
        if endpoints.unix is not None:
            with contextlib.suppress(FileNotFoundError):
                endpoints.unix.unlink()


def _tcp_token(tcp: tuple[str, int] | None, token_file: Path | None) -> str | None:
    if tcp is None:
        return None
    if token_file is None:
        raise LuodError(
            "rest-tcp-needs-token",
            f"the REST API on TCP {tcp[0]}:{tcp[1]} needs a bearer token file",
            "configure a token file (mode 600), or use only the unix socket",
        )
    return read_token(token_file)


def _tls(cert: Path | None, key: Path | None) -> dict[str, Any] | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise LuodError(
            "rest-tls-incomplete",
            "TLS for the REST API needs both a certificate and its key",
            "configure both files, or neither",
        )
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _server(app: ASGIApp, **config: Any) -> _Server:
    return _Server(
        uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            ws="none",
            timeout_graceful_shutdown=GRACE_SECONDS,
            **{"http": "httptools", **config},
        )
    )


async def _run(server: _Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except asyncio.CancelledError:
        server.should_exit = True
        if server.started:
            await server.shutdown(sockets=[sock])
        raise


def bind_unix(path: Path, group: str | None = SOCKET_GROUP) -> socket.socket:
    """Listen on ``path`` with mode 0660 and ``group``; it appears only once it accepts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(staging))
        os.chmod(staging, SOCKET_MODE)
        _chgrp(staging, group)
        listener.listen(128)
        os.replace(staging, path)
    except BaseException:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        raise
    return listener


def _chgrp(path: Path, group: str | None) -> None:
    if group is None:
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning("rest-group-missing", group=group, note="socket keeps luod's own group")
        return
    os.chown(path, -1, gid)
