"""The REST API as a contract for fleet tooling: hand-chosen operation ids, tags and a
description on every operation and field, a problem response on every route, enums for phases,
VM states and outcomes, RFC 3339 UTC times, ``*_seconds`` durations, cursor paging."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from luod.core.model import VmState
from luod.core.orchestrator import Phase
from luod.rest import models, openapi
from tests.rest.harness import Luod, until

pytestmark = [pytest.mark.unit, pytest.mark.anyio]
OPERATIONS = {
    ("get", "/v1/health"): "getHealth",
    ("get", "/v1/status"): "getStatus",
    ("get", "/v1/vms"): "listVms",
    ("get", "/v1/vms/{vm_id}"): "getVm",
    ("post", "/v1/preflight"): "runPreflight",
    ("post", "/v1/update"): "startUpdate",
    ("get", "/v1/update"): "getUpdate",
    ("post", "/v1/update/abort"): "abortUpdate",
    ("delete", "/v1/update"): "cancelUpdate",
    ("get", "/v1/history"): "getHistory",
    ("get", "/v1/events"): "watchEvents",
    ("delete", "/v1/vms/{vm_id}"): "dropVm",
    ("get", "/metrics"): "getMetrics",
    ("post", "/v1/qualifications"): "startQualification",
    ("get", "/v1/qualifications"): "listQualifications",
    ("get", "/v1/qualifications/{qid}"): "getQualification",
}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
SPEC = openapi.document()


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in SPEC["paths"].items() for m, op in ops.items()]


def test_every_operation_has_its_stable_id_a_tag_and_a_description() -> None:
    found = {(method, path): op["operationId"] for method, path, op in operations()}
    assert found == OPERATIONS
    tags = {tag["name"] for tag in SPEC["tags"]}
    for method, path, op in operations():
        assert op["tags"] and set(op["tags"]) <= tags, (method, path)
        assert op.get("summary") and len(op.get("description", "")) > 20, (method, path)


def test_every_route_documents_its_errors_as_problems() -> None:
    for method, path, op in operations():
        errors = [status for status in op["responses"] if status[0] in "45"]
        assert "500" in errors and "401" in errors, (method, path)
        for status in errors:
            response = op["responses"][status]
            assert response["description"].startswith("Problem: "), (method, path, status)
            assert list(response["content"]) == ["application/problem+json"]


def test_every_field_of_every_schema_is_described() -> None:
    undescribed = []
    for name, schema in SPEC["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            if not prop.get("description"):
                undescribed.append(f"{name}.{field}")
    assert undescribed == []
    for method, path, op in operations():
        for parameter in op.get("parameters", []):
            assert parameter.get("description"), (method, path, parameter["name"])


def test_phases_vm_states_and_outcomes_are_enums() -> None:
    schemas = SPEC["components"]["schemas"]
    assert schemas["Phase"]["enum"] == [str(p) for p in Phase]
    assert schemas["VmState"]["enum"] == [str(s) for s in VmState]
    assert schemas["Outcome"]["enum"] == [str(o) for o in models.Outcome]
    assert "none" in schemas["ReasonCode"]["enum"]
    record = schemas["UpdateRecord"]["properties"]
    assert record["outcome"]["$ref"].endswith("/Outcome")
    assert schemas["Vm"]["properties"]["state"]["$ref"].endswith("/VmState")
    assert schemas["Status"]["properties"]["phase"]["$ref"].endswith("/Phase")


def test_durations_say_seconds_and_times_are_date_time() -> None:
    schemas = SPEC["components"]["schemas"]
    record = schemas["UpdateRecord"]["properties"]
    assert "blackout_seconds" in record and "blackout" not in record
    assert record["started_at"]["anyOf"][0] == {"format": "date-time", "type": "string"}
    assert schemas["Transition"]["properties"]["at"]["format"] == "date-time"
    assert "deadline_seconds" in schemas["UpdateStartRequest"]["properties"]


def times_in(doc: Any) -> list[str]:
    """Every value of a field named like a time (at, *_at) or under vms/events steps."""
    found: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("vms", "events") and isinstance(value, dict):
                found += [v for steps in value.values() for v in _leaves(steps)]
            elif (key == "at" or key.endswith("_at")) and value is not None:
                found.append(value)
            else:
                found += times_in(value)
    elif isinstance(doc, list):
        for item in doc:
            found += times_in(item)
    return found


def _leaves(value: Any) -> list[Any]:
    return list(value.values()) if isinstance(value, dict) else [value]


async def test_an_update_record_has_rfc3339_utc_times(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    vmm = await luod.handover_vm("vm1")
    body = {"kernel": str(luod.kernel), "reuse_cmdline": True}
    assert (await client.post("/v1/update", json=body)).status_code == 202
    await until(lambda: vmm.events("FREEZE"))
    await luod.ask(vmm, {"cmd": "READY", "id": "vm1"})
    await until(lambda: luod.kexeced)
    update = (await client.get("/v1/update")).json()["update"]
    stamps = times_in(update)
    assert len(stamps) >= 8 and all(RFC3339_UTC.match(s) for s in stamps), stamps
    assert update["ended_at"] is None and update["started_at"] == update["phases"][0]["at"]
    assert update["vms"]["vm1"].keys() >= {"freeze_sent", "freeze_ack"}
    assert update["blackout_seconds"] == {"vm1": None}


async def refused_updates(client: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        reply = await client.post("/v1/update", json={"kernel": "/nowhere", "reuse_cmdline": True})
        assert reply.json()["code"] == "preflight-failed"
        ids.append((await client.get("/v1/update")).json()["update"]["id"])
    return ids


async def test_history_pages_newest_first_by_cursor(client: httpx.AsyncClient) -> None:
    ids = await refused_updates(client, 7)
    first = (await client.get("/v1/history?limit=3")).json()
    assert [h["id"] for h in first["history"]] == ids[::-1][:3]
    await refused_updates(client, 1)  # ends between two pages: it is not in the next ones
    second = (await client.get(f"/v1/history?limit=3&cursor={first['next_cursor']}")).json()
    third = (await client.get(f"/v1/history?limit=3&cursor={second['next_cursor']}")).json()
    pages = [*first["history"], *second["history"], *third["history"]]
    assert [h["id"] for h in pages] == ids[::-1]
    assert third["next_cursor"] is None
    for record in pages:
        assert (record["outcome"], record["reason_code"]) == ("refused", "preflight-failed")
        assert RFC3339_UTC.match(record["ended_at"])
    everything = (await client.get("/v1/history")).json()
    assert len(everything["history"]) == 8 and everything["next_cursor"] is None
