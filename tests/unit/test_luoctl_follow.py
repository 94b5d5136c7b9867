"""``luoctl update wait``, ``vm drop``, VM liveness and ``status`` at a glance (issue 16 §2,
§3), against a real luod REST API on the simulator (tests/unit/test_luoctl.py's Host)."""

from __future__ import annotations

import asyncio

import pytest

from luod.cli import render
from luod.cli.live import Board
from luod.cli.sse import Event
from luod.core.clock import SystemClock
from tests.rest.harness import FakeVmm, Luod, until
from tests.unit.test_luoctl import Host

pytestmark = pytest.mark.anyio


def vmm_of(host: Host) -> FakeVmm:
    found = host.luod.connections.of("vm1")
    assert isinstance(found, FakeVmm)
    return found


async def test_wait_times_out_with_6_then_reports_an_abort_with_4(host: Host) -> None:
    started = await host.luoctl("update", "start", *host.kernel_args("--deadline", "freezing=60"))
    assert started.code == 0
    await until(lambda: vmm_of(host).events("FREEZE"))
    late = await host.luoctl("update", "wait", "--timeout", "0.3")
    assert late.code == 6 and "timed out after 0.3 s: the update is still freezing" in late.err
    waiting = asyncio.create_task(host.luoctl("update", "wait"))
    await until(lambda: len(host.luod.facade.hub) == 1)
    assert (await host.luoctl("update", "abort", "--reason", "window closed")).code == 0
    ran = await waiting
    assert ran.code == 4
    assert ran.out.splitlines()[0].endswith("aborted (by uid 0): window closed")


async def test_wait_ends_rebooting_before_the_kexec_and_after_it_waits_for_the_reclaim(
    host: Host,
) -> None:
    assert (await host.luoctl("update", "start", *host.kernel_args())).code == 0
    await until(lambda: vmm_of(host).events("FREEZE"))
    waiting = asyncio.create_task(host.luoctl("update", "wait"))
    await until(lambda: len(host.luod.facade.hub) == 1)
    await host.luod.ask(vmm_of(host), {"cmd": "READY", "id": "vm1"})
    before = await waiting
    assert before.code == 0 and before.out.startswith(f"rebooting into {host.luod.kernel}")
    await until(lambda: host.luod.kexeced)
    await host.stop()
    host.luod.close()

    host.luod = Luod(host.state)  # the new kernel's luod: the VM is incoming, no VMM yet
    host.luod.driver.resume_after_kexec(SystemClock().now())
    await host.serve()
    listing = await host.luoctl("vms")
    assert "incoming" in listing.out and "gone" in listing.out  # no VMM spoke for it yet
    waiting = asyncio.create_task(host.luoctl("update", "wait", "--timeout", "30"))
    await until(lambda: len(host.luod.facade.hub) == 1)
    assert not waiting.done()  # reclaiming: it waits
    vmm = FakeVmm()
    assert (await host.luod.ask(vmm, {"cmd": "RECLAIM", "id": "vm1"}))["ok"]
    assert (await host.luod.ask(vmm, {"cmd": "DONE", "id": "vm1"}))["ok"]
    after = await waiting
    assert after.code == 0, after.err
    assert " completed" in after.out.splitlines()[0] and "blackout per VM:" in after.out


async def test_wait_with_nothing_running_says_so(host: Host) -> None:
    ran = await host.luoctl("update", "wait")
    assert ran.code == 0 and "no update is running, and none ran yet" in ran.out


async def test_liveness_is_shown_and_a_vm_whose_vmm_is_gone_can_be_dropped(host: Host) -> None:
    refused = await host.luoctl("vm", "drop", "vm1")
    assert refused.code == 1 and "[vm-connected]" in refused.err
    assert "--force (force=true) drops it anyway" in refused.err
    host.luod.handler.disconnected(vmm_of(host))  # its VMM died
    one = (await host.luoctl("--json", "vm", "vm1")).json()
    assert one["connected"] is False and one["disconnected_since"].endswith("Z")
    assert "gone 0 s" in (await host.luoctl("vms")).out
    assert "VM states 1 preserved; 1 with their VMM gone" in (await host.luoctl("status")).out
    checks = await host.luoctl("preflight", *host.kernel_args())
    assert "WARN  vmm-connected" in checks.out and "vm1" in checks.out
    dropped = await host.luoctl("vm", "drop", "vm1")
    assert dropped.code == 0, dropped.err
    assert dropped.out.strip() == ("dropped VM vm1: released session luod.vm1, 1 files, 1.0 MiB")
    assert (await host.luoctl("vms")).out.strip() == "no VMs"
    assert (await host.luoctl("vm", "drop", "vm1")).code == 1  # unknown-vm


async def test_drop_during_an_update_needs_force_and_preflight_refuses(host: Host) -> None:
    host.luod.handler.disconnected(await host.luod.handover_vm("vm2", size=8192))  # VMM gone
    started = await host.luoctl("update", "start", *host.kernel_args("--deadline", "freezing=60"))
    assert started.code == 0
    await until(lambda: vmm_of(host).events("FREEZE"))
    busy = await host.luoctl("preflight", *host.kernel_args())
    assert busy.code == 3 and "FAIL  update-idle" in busy.out
    assert "[update-running]" in (await host.luoctl("vm", "drop", "vm2")).err
    forced = await host.luoctl("--json", "vm", "drop", "vm2", "--force")
    assert forced.code == 0 and forced.json()["forced"] is True
    assert forced.json()["released"] == {
        "session": "luod.vm2", "files": 1, "bytes": 8192, "destroyed": [],
    }  # fmt: skip
    assert (await host.luoctl("--json", "update", "show")).json()["phase"] == "freezing"


async def test_status_at_a_glance(host: Host) -> None:
    ran = await host.luoctl("status")
    assert "VM states 1 preserved" in ran.out and "update    none yet (phase idle)" in ran.out
    await host.luoctl("update", "start", *host.kernel_args("--deadline", "freezing=60"))
    await until(lambda: vmm_of(host).events("FREEZE"))
    running = await host.luoctl("status")
    assert " freezing for " in running.out and str(host.luod.kernel) in running.out


def test_history_keeps_the_whole_reason() -> None:
    reason = "vm-refused: " + "x" * 200
    record = {
        "id": "u1", "outcome": "aborted", "reason": reason, "ended_at": None,
        "request": {"kernel": "/k"}, "blackout_seconds": {"vm1": 0.5},
    }  # fmt: skip
    line = render.history({"history": [record]})[1]
    assert line.endswith(reason) and "0.500 s" in line


def test_the_live_board_counts_on_luods_clock() -> None:
    board = Board.of([{"id": "vm1", "state": "preserved", "connected": True}])
    t0 = 1_900_000_000.0
    stamp = "2030-03-17T17:46:40Z"  # t0
    board.take(Event("STATE", {"phase": "idle", "update": None, "at": stamp}), 100.0)
    assert board.headline(board.now(100.0)).startswith("phase idle: no update is running")
    board.take(
        Event("PHASE", {"from": "idle", "to": "preparing", "at": stamp, "deadline_seconds": 600}),
        100.0,
    )
    board.take(
        Event("PHASE", {"from": "prepared", "to": "freezing", "at": "2030-03-17T17:46:41Z",
                        "deadline_seconds": 10.0}),
        101.0,
    )  # fmt: skip
    board.take(Event("VM_PROGRESS", {"id": "vm1", "step": "freeze_ack",
                                     "at": "2030-03-17T17:46:41.500000Z"}), 101.5)  # fmt: skip
    now = board.now(104.0)  # luoctl's monotonic clock moved 2.5 s since the last stamp
    assert now == pytest.approx(t0 + 4.0)
    assert "phase freezing  elapsed 4.0 s  deadline in 7.0 s" in board.headline(now)
    row = board.vms["vm1"]
    assert row.state == "paused" and row.paused_at == pytest.approx(t0 + 1.5)
    board.take(Event("VM_PROGRESS", {"id": "vm1", "step": "resumed",
                                     "at": "2030-03-17T17:46:44Z"}), 104.0)  # fmt: skip
    assert board.vms["vm1"].state == "resumed"
    assert board.vms["vm1"].running_at == pytest.approx(t0 + 4.0)
