"""REST against a hostile local user (issue 13, findings 2, 5 and 14): preflight is root-only
and never blocks on what it is given, custody health shows, other owners' VMs stay hidden."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from luod.core import compat
from luod.core.access import AccessPolicy
from luod.rest.app import create_app
from luod.rest.auth import PEER_UID_KEY, listener_app
from tests.rest.harness import FakeVmm, Luod

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


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Luod]:
    """A luod that admits group USER besides root: uid USER is a VMM user, not an operator."""
    daemon = Luod(tmp_path / "shared", access=AccessPolicy(frozenset({0}), frozenset({USER})))
    yield daemon
    daemon.close()


async def two_owners(luod: Luod) -> FakeVmm:
    root, user = FakeVmm(0), FakeVmm(USER)
    assert (await luod.ask(root, {"cmd": "REGISTER", "id": "vm1"}))["ok"]
    assert (await luod.ask(user, {"cmd": "REGISTER", "id": "vm2"}))["ok"]
    return user


async def test_on_the_vmm_socket_a_user_sees_only_its_own_vms(shared: Luod) -> None:
    user = await two_owners(shared)
    listing = await shared.ask(user, {"cmd": "LIST"})
    assert [vm["id"] for vm in listing["vms"]] == ["vm2"]
    hello = {"cmd": "HELLO", "capabilities": ["progress"]}
    assert (await shared.ask(user, hello))["ok"]
    for verb in ("WATCH", "HISTORY"):
        reply = await shared.ask(user, {"cmd": verb})
        assert reply["error"]["code"] == "not-allowed", verb
    everything = await shared.ask(FakeVmm(0), {"cmd": "LIST"})
    assert sorted(vm["id"] for vm in everything["vms"]) == ["vm1", "vm2"]


async def test_over_rest_a_user_sees_only_its_own_vms(shared: Luod) -> None:
    await two_owners(shared)
    async with as_uid(shared, USER) as user, as_uid(shared, 0) as root:
        mine = (await user.get("/v1/vms")).json()["vms"]
        assert [vm["id"] for vm in mine] == ["vm2"]
        assert (await user.get("/v1/vms/vm2")).status_code == 200
        theirs = await user.get("/v1/vms/vm1")
        assert theirs.status_code == 403 and theirs.json()["code"] == "not-owner"
        for path in ("/v1/history", "/v1/events", "/metrics"):
            reply = await user.get(path)
            assert reply.status_code == 403 and reply.json()["code"] == "not-allowed", path
        assert (await user.get("/v1/status")).status_code == 200
        everything = (await root.get("/v1/vms")).json()["vms"]
        assert sorted(vm["id"] for vm in everything) == ["vm1", "vm2"]
        assert (await root.get("/v1/history")).status_code == 200


async def test_the_image_is_read_off_the_main_loop(
    luod: Luod, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first read of an image (and its decompression) happens in a worker thread; the
    checks on the loop then find it in the cache."""
    readers: list[str] = []
    real = compat.CACHE._read

    def read(path: Path) -> Any:
        readers.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(compat.CACHE, "_read", read)
    kernel = luod.state / "next-bzImage"
    kernel.write_bytes(luod.kernel.read_bytes() + b"\0")  # a new image: not cached yet
    reply = await client.post("/v1/preflight", json=body(kernel))
    assert reply.status_code == 200
    assert readers and threading.main_thread().name not in readers


async def test_the_vmm_sockets_status_shows_custody_health(luod: Luod) -> None:
    status = await luod.ask(FakeVmm(0), {"cmd": "STATUS"})
    assert status["custody"] == {"kind": "memory", "healthy": True, "renewals": 0, "problem": ""}
