"""Every failure leaves as RFC 9457 problem+json with luod's code (and hint, errno, field)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import httpx
import pytest

from luod.errors import LuodError
from luod.rest import problems
from luod.rest.app import create_app
from tests.rest.harness import Luod

pytestmark = [pytest.mark.unit, pytest.mark.anyio]
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def assert_problem(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = reply.json()
    assert set(body) >= PROBLEM_KEYS
    assert (body["status"], body["code"], body["type"]) == (
        status,
        code,
        f"urn:luod:problem:{code}",
    )
    return body


async def test_unknown_vm_is_404_with_the_socket_code_and_hint(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/v1/vms/vm9"), 404, "unknown-vm")
    assert body["title"] == "No such VM" and body["instance"] == "/v1/vms/vm9"
    assert body["detail"] == "no VM 'vm9'" and body["hint"]


async def test_a_vm_id_luod_never_accepts_is_422_naming_the_parameter(
    client: httpx.AsyncClient,
) -> None:
    body = assert_problem(await client.get("/v1/vms/-bad"), 422, "bad-request")
    assert [e["field"] for e in body["errors"]] == ["path.vm_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reuse_cmdline": True}, "body.kernel"),
        ({"kernel": ""}, "body.kernel"),
        ({"kernel": "/k"}, "body.cmdline"),
        ({"kernel": "/k", "cmdline": "ro", "reuse_cmdline": True}, "body.cmdline"),
        ({"kernel": "/k", "reuse_cmdline": "yes"}, "body.reuse_cmdline"),
        (
            {"kernel": "/k", "reuse_cmdline": True, "deadline_seconds": {"rebooting": 5}},
            "body.deadline_seconds",
        ),
        (
            {"kernel": "/k", "reuse_cmdline": True, "deadline_seconds": {"freezing": 0}},
            "body.deadline_seconds",
        ),
        (
            {"kernel": "/k", "reuse_cmdline": True, "deadline_seconds": {"frozen": "5"}},
            "body.deadline_seconds",
        ),
        ({"kernel": "/k", "reuse_cmdline": True, "dry_run": 1}, "body.dry_run"),
        ({"kernel": "/k", "reuse_cmdline": True, "wait": True}, "body.wait"),
        ({"kernel": "/k\0", "reuse_cmdline": True}, "body.kernel"),
        ([1, 2], "body"),
    ],
)
async def test_an_invalid_update_body_is_422_naming_the_field(
    client: httpx.AsyncClient, body: Any, field: str
) -> None:
    problem = assert_problem(await client.post("/v1/update", json=body), 422, "bad-request")
    fields = [e["field"] for e in problem["errors"]]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    assert field in problem["detail"]
    assert_in_luods_words(problem)


PYDANTIC_WORDS = ("Input should", "Value error", "pydantic", "[key]", "function-after", "type=")


def assert_in_luods_words(problem: dict[str, Any]) -> None:
    """No validator internals: no pydantic phrasing, links, error types or union tags."""
    text = json.dumps(problem)
    assert not [w for w in PYDANTIC_WORDS if w in text], text
    assert problem["title"] not in {s.phrase for s in HTTPStatus}, problem["title"]


async def test_body_that_is_not_json_is_422(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/v1/preflight", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_problem(reply, 422, "bad-request")


async def test_an_abort_reason_over_512_characters_is_refused(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/update/abort", json={"reason": "x" * 513})
    assert [e["field"] for e in assert_problem(reply, 422, "bad-request")["errors"]] == [
        "body.reason"
    ]


async def test_unknown_route_and_wrong_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = assert_problem(await client.get("/v1/nothing"), 404, "not-found")
    assert missing["detail"] == "no resource at /v1/nothing"
    wrong = assert_problem(await client.put("/v1/status"), 405, "method-not-allowed")
    assert (wrong["detail"], wrong["hint"]) == ("PUT /v1/status: /v1/status does not take PUT",
                                                "it takes GET")  # fmt: skip
    for body in (missing, wrong):
        assert_in_luods_words(body)


async def test_every_kind_of_error_has_its_own_type_and_title() -> None:
    types = {problems.problem(code, "x").type for code in problems.KINDS}
    titles = [problems.problem(code, "x").title for code in problems.KINDS]
    assert len(types) == len(problems.KINDS) and all(
        t.startswith("urn:luod:problem:") for t in types
    )
    assert not set(titles) & {s.phrase for s in HTTPStatus}
    kernel = problems.problem("luo-ebusy", "busy")
    assert (kernel.type, kernel.title) == (
        "urn:luod:problem:luo-ebusy",
        problems.KERNEL_ERROR.title,
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "query.limit"),
        ("limit=x", "query.limit"),
        ("cursor=" + "a" * 65, "query.cursor"),
    ],
)
async def test_bad_paging_parameters_are_422_naming_them(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    problem = assert_problem(await client.get(f"/v1/history?{query}"), 422, "bad-request")
    assert [e["field"] for e in problem["errors"]] == [field]
    assert_in_luods_words(problem)


async def test_a_cursor_luod_never_handed_out_is_bad_cursor(client: httpx.AsyncClient) -> None:
    for cursor in ("nope", "aDk5", "%00"):
        body = assert_problem(await client.get(f"/v1/history?cursor={cursor}"), 422, "bad-cursor")
        assert body["hint"] and "next_cursor" in body["hint"]


async def test_kernel_errors_keep_errno_and_its_name() -> None:
    body = problems.from_luod_error(LuodError("luo-ebusy", "busy", "held by pid 7", 16))
    assert (body.status, body.errno, body.errno_name, body.hint) == (
        500,
        16,
        "EBUSY",
        "held by pid 7",
    )


async def test_a_bug_is_a_500_problem_not_a_traceback(luod: Luod) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    luod.facade.status = broken  # type: ignore[method-assign,assignment]
    transport = httpx.ASGITransport(app=create_app(luod.facade), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://luod") as client:
        body = assert_problem(await client.get("/v1/status"), 500, "internal")
    assert body["detail"] == "RuntimeError: boom"


async def test_luod_not_answering_its_worker_is_503_with_retry_after(luod: Luod) -> None:
    """While luod stops (the kexec, a restart) its REST worker may answer for a moment: 503
    ``rest-link``, with ``Retry-After`` (RFC 9110) so that any HTTP client knows to try again."""

    def gone() -> None:
        raise LuodError("rest-link", "luod closed the link", "luod restarts its REST worker")

    luod.facade.status = gone  # type: ignore[method-assign,assignment]
    transport = httpx.ASGITransport(app=create_app(luod.facade))
    async with httpx.AsyncClient(transport=transport, base_url="http://luod") as client:
        reply = await client.get("/v1/status")
    assert_problem(reply, 503, "rest-link")
    assert reply.headers["retry-after"] == "1"
