"""Every resource of /v1 against the real facade over a simulated luod (ASGI, no sockets)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import luod
from luod.core import preflight, timeline
from luod.core.clock import Stamp
from luod.rest.app import create_app
from luod.rest.auth import PEER_UID_KEY, listener_app
from tests.rest.harness import Luod, until

pytestmark = [pytest.mark.unit, pytest.mark.anyio]
luod_version = luod.__version__


def update_body(luod: Luod, **extra: Any) -> dict[str, Any]:
    return {"kernel": str(luod.kernel), "reuse_cmdline": True, **extra}


async def test_health_names_the_version(client: httpx.AsyncClient) -> None:
    reply = await client.get("/v1/health")
    assert reply.json() == {"status": "ok", "version": luod.__version__}


async def test_status_counts_vms_sessions_files_and_bytes(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    await luod.handover_vm("vm1", size=8192)
    status = (await client.get("/v1/status")).json()
    info = luod.registry.info
    assert status["kernel"] == info.release and status["luo_supported"] is True
    assert status["liveupdate_number"] == info.liveupdate_number
    assert status["host"] and status["backend"] == "sim"
    assert (status["phase"], status["vms"], status["sessions"]) == ("idle", 1, 1)
    assert (status["files"], status["preserved_bytes"]) == (1, 8192)


async def test_vms_list_and_one_vm_with_its_files(luod: Luod, client: httpx.AsyncClient) -> None:
    await luod.handover_vm("vm1")
    listing = (await client.get("/v1/vms")).json()["vms"]
    assert [vm["id"] for vm in listing] == ["vm1"]
    vm = (await client.get("/v1/vms/vm1")).json()
    assert (vm["owner_uid"], vm["mode"], vm["state"]) == (0, "handover", "preserved")
    assert vm["files"] == [
        {
            "name": "ram0",
            "kind": "memfd",
            "size": 4096,
            "token": 1,
            "reclaimed": False,
            "exec_sealed": False,
        }
    ]


async def test_preflight_runs_the_checks_and_starts_nothing(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    await luod.handover_vm()
    result = (await client.post("/v1/preflight", json=update_body(luod))).json()
    assert result["ok"] is True
    assert {c["id"] for c in result["checks"]} >= {"device", "kernel-image", "handover"}
    bad = {"kernel": str(luod.state / "missing"), "cmdline": "root=/dev/vda"}
    refused = (await client.post("/v1/preflight", json=bad)).json()
    failed = {c["id"] for c in refused["checks"] if c["status"] == "fail"}
    assert refused["ok"] is False and failed == {"kernel-image", "next-cmdline", "handover-abi"}
    assert (await client.get("/v1/update")).json() == {"phase": "idle", "update": None}
    assert (await client.get("/v1/history")).json() == {"history": [], "next_cursor": None}


async def test_dry_run_update_answers_200_with_the_checks(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    await luod.handover_vm()
    reply = await client.post("/v1/update", json=update_body(luod, dry_run=True))
    assert reply.status_code == 200 and reply.json()["ok"] is True
    assert (await client.get("/v1/update")).json()["phase"] == "idle"


async def test_update_starts_202_then_409_while_running_then_aborts(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    vmm = await luod.handover_vm()
    body = update_body(luod, deadline_seconds={"freezing": 60})
    started = await client.post("/v1/update", json=body)
    assert started.status_code == 202 and started.headers["location"] == "/v1/update"
    record = started.json()
    assert record["outcome"] == "running" and record["request"]["cmdline"] is None
    assert record["request"]["deadline_seconds"] == {"freezing": 60.0}
    await until(lambda: vmm.events("FREEZE"))
    assert (await client.get("/v1/update")).json()["phase"] == "freezing"

    again = await client.post("/v1/update", json=update_body(luod))
    assert again.status_code == 409 and again.json()["code"] == "update-running"

    aborted = await client.post("/v1/update/abort", json={"reason": "window closed"})
    assert aborted.status_code == 200
    assert (aborted.json()["update"]["outcome"], aborted.json()["update"]["reason"]) == (
        "aborted",
        "window closed",
    )
    assert vmm.events("RESUME")
    history = (await client.get("/v1/history")).json()["history"]
    assert [h["outcome"] for h in history] == ["aborted"]
    assert (history[0]["reason_code"], history[0]["ended_at"][-1]) == ("operator", "Z")


async def test_delete_update_aborts_and_nothing_to_abort_is_409(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    vmm = await luod.handover_vm()
    assert (await client.post("/v1/update", json=update_body(luod))).status_code == 202
    await until(lambda: vmm.events("FREEZE"))  # an abort before the update task ran is lost
    deleted = await client.delete("/v1/update")
    assert deleted.json()["update"]["reason"] == "abort requested over the REST API by token"
    assert deleted.json()["update"]["aborted_by"] == "token"
    again = await client.delete("/v1/update")
    assert again.status_code == 409 and again.json()["code"] == "wrong-state"
    assert (await client.post("/v1/update/abort")).status_code == 409


async def test_preflight_refusal_is_422_with_the_checks_and_recorded(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    await luod.handover_vm()
    reply = await client.post("/v1/update", json=update_body(luod, kernel="/nonexistent"))
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["code"] == "preflight-failed" and "kernel-image" in problem["detail"]
    failed = [c["id"] for c in problem["checks"] if c["status"] == "fail"]
    assert failed == ["kernel-image", "handover-abi"]  # no image: no ABI either
    history = (await client.get("/v1/history")).json()["history"]
    assert [h["outcome"] for h in history] == ["refused"]


async def test_a_refused_update_runs_the_preflight_checks_once(
    luod: Luod, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[preflight.PreflightInput] = []
    checks = preflight.run

    def counted(ctx: preflight.PreflightInput) -> list[preflight.Check]:
        runs.append(ctx)
        return checks(ctx)

    monkeypatch.setattr(preflight, "run", counted)
    reply = await client.post("/v1/update", json=update_body(luod, kernel="/nonexistent"))
    assert reply.status_code == 422 and reply.json()["checks"]
    assert len(runs) == 1  # the problem shows the checks of the refusal, not a second run


async def test_update_and_abort_need_root_on_the_unix_socket(luod: Luod) -> None:
    await luod.handover_vm()
    app = listener_app(create_app(luod.facade), **{PEER_UID_KEY: 1000})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://luod"
    ) as user:
        reply = await user.post("/v1/update", json=update_body(luod))
        assert reply.status_code == 403 and reply.json()["code"] == "not-allowed"
        assert (await user.delete("/v1/update")).json()["code"] == "not-allowed"
        assert (await user.get("/v1/status")).status_code == 200
        assert (await user.post("/v1/preflight", json=update_body(luod))).status_code == 403


async def test_metrics_expose_phase_sizes_and_outcomes(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    await luod.handover_vm(size=8192)
    await client.post("/v1/update", json=update_body(luod, kernel="/nonexistent"))
    reply = await client.get("/metrics")
    assert reply.headers["content-type"].startswith("text/plain")
    lines = set(reply.text.splitlines())
    assert 'luod_update_phase{phase="idle"} 1.0' in lines
    assert 'luod_update_phase{phase="freezing"} 0.0' in lines
    assert {"luod_vms 1.0", "luod_sessions 1.0", "luod_preserved_bytes 8192.0"} <= lines
    assert 'luod_updates_total{outcome="refused"} 1.0' in lines
    assert 'luod_updates_total{outcome="completed"} 0.0' in lines
    assert 'luod_update_failures_total{outcome="refused",reason="preflight-failed"} 1.0' in lines
    kernel = luod.registry.info.release
    assert f'luod_build_info{{kernel="{kernel}",version="{luod_version}"}} 1.0' in lines
    assert {'luod_vms_by_state{state="preserved"} 1.0', "luod_update_running 0.0"} <= lines
    assert any(line.startswith("process_resident_memory_bytes ") for line in lines)


async def test_metrics_histograms_and_the_last_blackout_outlive_the_update(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    """Two ended updates in the history: one completed (blackouts 0.3 s and 7 s), then one
    aborted (none): the histograms count both, the last blackout is the completed one's."""
    t0 = 1_800_000_000.0
    asked: dict[str, Any] = {
        "kernel": "/boot/next",
        "initrd": None,
        "cmdline": None,
        "deadlines": {},
        "uid": 0,
    }
    done = timeline.UpdateRecord(request=asked, outcome="completed")
    for offset, (source, target) in enumerate(
        [("idle", "preparing"), ("preparing", "prepared"), ("prepared", "freezing")]
    ):
        done.phase({"from": source, "to": target, "reason": "", "at": stamp(t0 + offset * 2)})
    done.vm_event("vm1", "freeze_ack", Stamp(t0, t0, t0))
    done.vm_event("vm1", "done", Stamp(t0 + 0.3, 0, 0))
    done.vm_event("vm2", "freeze_ack", Stamp(t0, t0, t0))
    done.vm_event("vm2", "done", Stamp(t0 + 7, 0, 0))
    timeline.append_history(luod.state, done)
    aborted = timeline.UpdateRecord(
        request=asked, outcome="aborted", reason="deadline: no READY from vm2"
    )
    timeline.append_history(luod.state, aborted)
    lines = set((await client.get("/metrics")).text.splitlines())
    assert {
        'luod_update_blackout_seconds_bucket{le="0.25"} 0.0',
        'luod_update_blackout_seconds_bucket{le="0.5"} 1.0',
        'luod_update_blackout_seconds_bucket{le="10.0"} 2.0',
        'luod_update_blackout_seconds_bucket{le="+Inf"} 2.0',
        "luod_update_blackout_seconds_count 2.0",
        "luod_update_blackout_seconds_sum 7.3",
        'luod_update_phase_duration_seconds_bucket{le="2.0",phase="preparing"} 1.0',
        'luod_update_phase_duration_seconds_count{phase="prepared"} 1.0',
        'luod_last_update_blackout_seconds{vm="vm1"} 0.3',
        'luod_last_update_blackout_seconds{vm="vm2"} 7.0',
        'luod_update_failures_total{outcome="aborted",reason="deadline"} 1.0',
    } <= lines


def stamp(realtime: float) -> dict[str, float]:
    return Stamp(realtime, realtime, realtime).to_dict()


async def test_metrics_split_each_blackout_where_luod_stamped_every_step(
    luod: Luod, client: httpx.AsyncClient
) -> None:
    """A completed update across a kexec, every step stamped: each part of vm1's blackout (0.2
    s wait, 0.8 s kexec, 5 s boot, 1 s start, 0.5 s luod, 0.3 s reclaim, 2 s restore) is in the
    histogram by part and in the last update's gauges. An aborted update after it measures a
    blackout (to the resume) with no parts: the last update's gauges have none."""
    t0 = 1_800_000_000.0
    asked = {"kernel": "/boot/next", "deadlines": {}, "uid": 0}
    done = timeline.UpdateRecord(request=asked, outcome="completed")
    done.phase({"from": "frozen", "to": "rebooting", "reason": "", "at": stamp(t0 + 0.2)})
    for name, offset in (("kernel_boot", 1.0), ("luod_exec", 6.0), ("luod_start", 7.0),
                         ("sessions_retrieved", 7.5)):  # fmt: skip
        done.event(name, Stamp(t0 + offset, 0, 0))
    for name, offset in (("freeze_ack", 0.0), ("reclaimed", 7.8), ("done", 9.8)):
        done.vm_event("vm1", name, Stamp(t0 + offset, 0, 0))
    timeline.append_history(luod.state, done)
    text = (await client.get("/metrics")).text
    lines = set(text.splitlines())
    spans = {"wait": 0.2, "kexec": 0.8, "boot": 5.0, "start": 1.0, "luod": 0.5, "reclaim": 0.3,
             "restore": 2.0}  # fmt: skip
    for part, seconds in spans.items():
        assert f'luod_update_blackout_part_seconds_count{{part="{part}"}} 1.0' in lines
        gauge = f'luod_last_update_blackout_part_seconds{{part="{part}",vm="vm1"}} '
        found = [line for line in lines if line.startswith(gauge)]
        assert len(found) == 1 and float(found[0].split()[-1]) == pytest.approx(seconds)
    assert 'luod_update_blackout_part_seconds_bucket{le="1.0",part="kexec"} 1.0' in lines
    assert 'luod_update_blackout_part_seconds_bucket{le="2.0",part="boot"} 0.0' in lines
    aborted = timeline.UpdateRecord(request=asked, outcome="aborted", reason="operator")
    aborted.vm_event("vm1", "freeze_ack", Stamp(t0 + 20, 0, 0))
    aborted.vm_event("vm1", "resumed", Stamp(t0 + 20.5, 0, 0))
    timeline.append_history(luod.state, aborted)
    lines = set((await client.get("/metrics")).text.splitlines())
    assert 'luod_last_update_blackout_seconds{vm="vm1"} 0.5' in lines
    assert not [line for line in lines if line.startswith("luod_last_update_blackout_part")]
    assert 'luod_update_blackout_part_seconds_count{part="boot"} 1.0' in lines
    history = (await client.get("/v1/history?limit=2")).json()["history"]
    assert history[0]["blackout_parts"] == {}
    assert history[1]["blackout_parts"]["vm1"] == pytest.approx(spans)
