"""REST against a hostile local user (issue 13, findings 2, 5 and 14): preflight is root-only
and never blocks on what it is given, custody health shows, other owners' VMs stay hidden."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from luod.rest.app import create_app
from luod.rest.auth import PEER_UID_KEY, listener_app
from tests.rest.harness import Luod

pytestmark = [pytest.mark.unit, pytest.mark.anyio]
USER = 1000


def as_uid(luod: Luod, uid: int) -> httpx.AsyncClient:
    app = listener_app(create_app(luod.facade), **{PEER_UID_KEY: uid})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://luod")


def body(kernel: Path | str) -> dict[str, Any]:
    return {"kernel": str(kernel), "reuse_cmdline": True}


@pytest.mark.parametrize("kernel", ["/etc/shadow", "/nonexistent/bzImage"])
async def test_preflight_is_root_only_and_no_existence_oracle(luod: Luod, kernel: str) -> None:
    async with as_uid(luod, USER) as user:
        for path in ("/v1/preflight", "/v1/update"):
            payload = {**body(kernel), "dry_run": True} if path == "/v1/update" else body(kernel)
            reply = await user.post(path, json=payload)
            assert reply.status_code == 403, path
            assert reply.json()["code"] == "not-allowed"
            assert kernel not in reply.text  # the same answer whether the file exists or not


async def test_a_fifo_as_kernel_fails_its_check_at_once(
    luod: Luod, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    async with asyncio.timeout(10):  # the old open() blocked until a writer came
        reply = await client.post("/v1/preflight", json=body(fifo))
    checks = {c["id"]: c for c in reply.json()["checks"]}
    assert checks["kernel-image"]["status"] == "fail"
    assert "not a regular file" in checks["kernel-image"]["message"]


async def test_a_device_as_kernel_is_refused_unread(luod: Luod, client: httpx.AsyncClient) -> None:
    async with asyncio.timeout(10):
        reply = await client.post("/v1/preflight", json=body("/dev/zero"))
    checks = {c["id"]: c for c in reply.json()["checks"]}
    assert checks["kernel-image"]["status"] == "fail"


async def test_status_and_metrics_show_custody_health(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    status = (await client.get("/v1/status")).json()
    assert status["custody"] == {"kind": "memory", "healthy": True, "renewals": 0, "problem": ""}
    lines = set((await client.get("/metrics")).text.splitlines())
    assert 'luod_custody_healthy{kind="memory"} 1.0' in lines
    assert "luod_custody_renewals_total 0.0" in lines
