"""The guards in front of the REST app (issue 13, findings 3 and 15): the token before the
body, 413 above the body limit, a cap on connections, /openapi.json behind the token, a warning
for TCP without TLS."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send
from structlog.testing import capture_logs

from luod.rest.app import create_app
from luod.rest.middleware import BearerGate, BodyLimit
from tests.rest.harness import Luod
from tests.rest.test_serve import TOKEN, serving, token_file, unix_client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Recorder:
    """An ASGI app that reads the whole body and says how much it got."""

    def __init__(self) -> None:
        self.received = 0
        self.called = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        more = True
        while more:
            message = await receive()
            self.received += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def http_scope(
    path: str = "/v1/preflight", headers: list[tuple[bytes, bytes]] | None = None
) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": headers or []}


async def call(app: Any, scope: Scope, chunks: list[bytes]) -> tuple[int, dict[str, Any], int]:
    """(status, JSON body, chunks the app pulled)."""
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        body = chunks[pulled - 1] if pulled <= len(chunks) else b""
        return {"type": "http.request", "body": body, "more_body": pulled < len(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if body.startswith(b"{") else {}, pulled


async def test_no_token_is_refused_before_the_body_is_read() -> None:
    inner = Recorder()
    status, problem, pulled = await call(BearerGate(inner, TOKEN), http_scope(), [b"x" * 100])
    assert (status, problem["code"], pulled, inner.called) == (401, "unauthorized", 0, False)


async def test_the_right_token_passes_whatever_the_schemes_case() -> None:
    inner = Recorder()
    scope = http_scope(headers=[(b"authorization", f"bearer {TOKEN}".encode())])
    status, _, _ = await call(BearerGate(inner, TOKEN), scope, [b"{}"])
    assert status == 200 and inner.received == 2


async def test_a_declared_length_above_the_limit_is_413_unread() -> None:
    inner = Recorder()
    scope = http_scope(headers=[(b"content-length", b"65537")])
    status, problem, pulled = await call(BodyLimit(inner, 65536), scope, [b"x"])
    assert (status, problem["code"], pulled, inner.called) == (413, "body-too-large", 0, False)


async def test_a_chunked_body_is_cut_at_the_limit() -> None:
    inner = Recorder()
    status, problem, pulled = await call(BodyLimit(inner, 1000), http_scope(), [b"x" * 600] * 10)
    assert (status, problem["code"]) == (413, "body-too-large")
    assert pulled == 2  # stopped at the chunk that passed the limit


async def test_a_body_at_the_limit_passes() -> None:
    inner = Recorder()
    scope = http_scope(headers=[(b"content-length", b"1000")])
    status, _, _ = await call(BodyLimit(inner, 1000), scope, [b"x" * 1000])
    assert status == 200 and inner.received == 1000


async def test_openapi_json_needs_the_token_over_tcp(luod: Luod, tmp_path: Path) -> None:
    tcp = {"tcp": ("127.0.0.1", 0), "token_file": token_file(tmp_path)}
    async with serving(create_app(luod.facade), unix_path=None, **tcp) as where:
        assert where.tcp is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{where.tcp[1]}") as client:
            bare = await client.get("/openapi.json")
            with_token = await client.get(
                "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
            )
    assert bare.status_code == 401 and with_token.status_code == 200


async def test_an_oversized_body_over_the_unix_socket_is_413(luod: Luod, tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    body = {"kernel": "x" * 2000, "reuse_cmdline": True}
    app = create_app(luod.facade)
    async with serving(app, unix_path=sock, max_body=1024), unix_client(sock) as client:
        reply = await client.post("/v1/preflight", json=body)
    assert reply.status_code == 413 and reply.json()["code"] == "body-too-large"


async def test_connections_beyond_the_cap_get_503(luod: Luod, tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    async with serving(create_app(luod.facade), unix_path=sock, max_connections=2) as _where:
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        try:
            for conn in idle:
                conn.connect(str(sock))
            await asyncio.sleep(0.2)  # accepted by uvicorn
            async with unix_client(sock) as client:
                busy = await client.get("/v1/health")
        finally:
            for conn in idle:
                conn.close()
        await asyncio.sleep(0.2)
        async with unix_client(sock) as client:
            again = await client.get("/v1/health")
    assert busy.status_code == 503 and again.status_code == 200


async def test_tcp_without_tls_warns(luod: Luod, tmp_path: Path) -> None:
    tcp = {"tcp": ("127.0.0.1", 0), "token_file": token_file(tmp_path)}
    with capture_logs() as logs:
        async with serving(create_app(luod.facade), unix_path=None, **tcp):
            pass
    warned = [e for e in logs if e["event"] == "rest-tcp-without-tls"]
    assert warned and warned[0]["log_level"] == "warning"


async def test_a_chunked_body_above_the_limit_is_413_from_the_real_app(luod: Luod) -> None:
    """FastAPI answers a body it could not read with 422: the limit's 413 replaces it."""

    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 600

    app = BodyLimit(create_app(luod.facade), 1000)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://luod") as client:
        reply = await client.post(
            "/v1/preflight", content=chunks(), headers={"content-type": "application/json"}
        )
    assert reply.status_code == 413 and reply.json()["code"] == "body-too-large"
