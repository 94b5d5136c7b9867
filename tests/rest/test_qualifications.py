"""``POST /v1/qualifications``: a chain's kernels as image paths or as objects with their initrd
and command line; what is refused, with a code and a hint, before anything is preserved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.rest.harness import Luod

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


async def post(client: httpx.AsyncClient, chain: list[Any]) -> httpx.Response:
    return await client.post("/v1/qualifications", json={"chain": chain, "sessions": 1})


@pytest.mark.parametrize(
    "kernel",
    [
        {"image": "/boot/b", "initrd": ""},  # an empty path
        {"image": "/boot/b", "cmdline": "a\x00b"},  # a NUL byte
        {"image": "/boot/b", "kernel": "/boot/b"},  # an unknown member
        {"initrd": "/boot/initrd"},  # no image
        {"image": "/boot/b", "cmdline": "x" * 4097},
    ],
)
async def test_a_malformed_chain_kernel_is_a_validation_problem(
    luod: Luod, client: httpx.AsyncClient, kernel: dict[str, Any]
) -> None:
    reply = await post(client, [str(luod.kernel), kernel])
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert problem["code"] == "bad-request" and problem["hint"], problem
    [error] = problem["errors"]  # the form given (an object) judged, not both forms
    assert error["field"].startswith("body.chain.1.object"), problem


async def test_an_initrd_luod_cannot_read_is_refused_naming_the_kernel(
    luod: Luod, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    for initrd, why in ((tmp_path / "none", "No such file"), (tmp_path, "not a regular file")):
        kernel = {"image": str(luod.kernel), "initrd": str(initrd)}
        reply = await post(client, [str(luod.kernel), kernel])
        problem = reply.json()
        assert reply.status_code == 422 and problem["code"] == "bad-chain", problem
        assert str(luod.kernel) in problem["detail"] and why in problem["detail"]
        assert "initrd" in problem["hint"]
    assert (await client.get("/v1/qualifications")).json() == {"qualifications": []}


@pytest.mark.parametrize(
    ("cmdline", "said"),
    [("root=/dev/vda ro", "lacks liveupdate=on"), ("liveupdate=on kho=off", "kho=off"),
     ("liveupdate=on " + "x" * 2100, "2114 bytes")],
)  # fmt: skip
async def test_a_command_line_the_next_kernel_cannot_take_sessions_with_is_refused(
    luod: Luod, client: httpx.AsyncClient, cmdline: str, said: str
) -> None:
    reply = await post(client, [str(luod.kernel), {"image": str(luod.kernel), "cmdline": cmdline}])
    problem = reply.json()
    assert reply.status_code == 422 and problem["code"] == "bad-chain", problem
    assert said in problem["detail"] and problem["hint"]
