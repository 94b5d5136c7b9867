"""The collection's rolling update over twenty simulated hypervisors (tests/fleet/harness.py):
the playbook luod.liveupdate.rolling_update with the role's batches [1, 5 %, 25 %] and a
failure budget of 20 %, every host on its own luod over its own socket, kexecs simulated and
every VM's memory verified after each one.

1. Everything from the simulator's release to B, batch by batch, each batch behind the gate.
2. To C with two faults in the third batch (a VM that never preserved: the preflight refuses;
   a VMM that never answers FREEZE: luod aborts at the freezing deadline): 2 of 5 hosts fail,
   more than 20 %, so the rollout stops after that batch; later hosts are untouched, the
   failed ones are as luod's abort (or refusal) left them, their VMs running.
3. Faults cleared, the same playbook again: the hosts already on C are skipped, the rest
   updated; the whole fleet runs C.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.harness import Fleet, PlaybookRun, SimHost, run_playbook

BATCHES = [["h01"], ["h02"], [f"h{n:02d}" for n in range(3, 8)]]
BATCHES += [[f"h{n:02d}" for n in range(s, min(s + 5, 21))] for s in (8, 13, 18)]
GATE = "Health gate of the batch (a host failing it stops the rollout)"
UPDATE = "Live-update the kernel, across the kexec"
PREFLIGHT = "Run luod's preflight checks for the next kernel"
SKIP = "Skip a host that runs the target release with every VM back"
FAULTY = {"h04": "h04-stuck", "h06": "h06-stubborn"}
TIMINGS: dict[str, float] = {}


def rollout(fleet: Fleet, kernel: Path, name: str) -> PlaybookRun:
    inventory = fleet.inventory(
        fleet.root / f"inventory-{name}.json",
        rolling_update_kernel=str(kernel),
        rolling_update_deadline_seconds={"freezing": 3},
        rolling_update_blackout_budget_seconds=60,
    )
    run = run_playbook(inventory, fleet.root / f"ansible-{name}", {})
    TIMINGS[name] = run.seconds
    print(f"rollout {name}: exit {run.returncode} in {run.seconds:.1f} s")
    assert not fleet.problems(), fleet.problems()
    return run


def updates(host: SimHost) -> list[dict[str, Any]]:
    return host.history()


def when(record: dict[str, Any], which: int) -> float:
    return float(record["phases"][which]["at"]["realtime"])


def on(host: SimHost, kernel: Path) -> bool:
    """The host's last update is a completed one into ``kernel``, and its VMs came back."""
    last = updates(host)[-1] if updates(host) else None
    if last is None or last["outcome"] != "completed":
        return False
    return last["request"]["kernel"] == str(kernel) and all(
        v["event"] == "verified" and all(v["files"].values())
        for v in host.verdicts
        if v["boot"] == host.boots
    )


def test_a_fleet_of_twenty_rolls_out_in_gated_batches(
    fleet: Fleet, kernels: dict[str, Path]
) -> None:
    run = rollout(fleet, kernels["B"], "B")
    assert run.returncode == 0, run.output[-4000:]
    assert run.hosts(UPDATE, changed=True) == {h.name for h in fleet.hosts}
    for host in fleet.hosts:
        assert len(updates(host)) == 1 and on(host, kernels["B"]), host.name
        assert host.boots == 2 and len(host.verdicts) == len(host.vms)
        blackout = updates(host)[-1]["blackout"]
        assert set(blackout) == set(host.vms) and all(b and b > 0 for b in blackout.values())
    for earlier, later in itertools.pairwise(BATCHES):  # batch after batch
        ended = max(when(updates(fleet[h])[-1], -1) for h in earlier)
        started = min(when(updates(fleet[h])[-1], 0) for h in later)
        assert ended < started, (earlier, later)
    gates = [r for r in run.results if r["task"].endswith(GATE)]
    assert [r["status"] for r in gates] == ["ok"] * len(BATCHES)
    assert [r["host"] for r in gates] == [batch[0] for batch in BATCHES]


@pytest.fixture(scope="module")
def faulty(fleet: Fleet, kernels: dict[str, Path]) -> PlaybookRun:
    fleet["h04"].add_stuck_vm(FAULTY["h04"])
    fleet["h06"].add_stubborn_vmm(FAULTY["h06"])
    return rollout(fleet, kernels["C"], "C-faults")


def test_a_rollout_stops_when_a_batch_fails_beyond_the_budget(
    fleet: Fleet, kernels: dict[str, Path], faulty: PlaybookRun
) -> None:
    run = faulty
    assert run.returncode != 0
    reached = {h for batch in BATCHES[:3] for h in batch}
    assert run.reached() == reached and run.failed() == set(FAULTY)
    for name in ("h01", "h02", "h03", "h05", "h07"):
        assert on(fleet[name], kernels["C"]) and len(updates(fleet[name])) == 2, name
    for host in fleet.hosts:
        if host.name not in reached:  # never touched: still on B, no new update, no reboot
            assert len(updates(host)) == 1 and on(host, kernels["B"]) and host.boots == 2
    refused = run.result("h04", PREFLIGHT)
    assert refused["status"] == "failed" and "handover: VMs not ready: h04-stuck" in refused["msg"]
    assert not run.hosts(UPDATE) & {"h04"}


def test_failed_hosts_are_left_as_luods_abort_leaves_them(
    fleet: Fleet, kernels: dict[str, Path], faulty: PlaybookRun
) -> None:
    refused, aborted = fleet["h04"], fleet["h06"]
    assert len(updates(refused)) == 1 and refused.boots == 2  # the preflight changed nothing
    assert not any(refused.said(vm, "frozen") for vm in refused.vms)
    last = updates(aborted)[-1]
    assert (last["outcome"], last["request"]["kernel"]) == ("aborted", str(kernels["C"]))
    assert last["reason"].startswith("deadline: no READY to FREEZE from h06-stubborn")
    result = faulty.result("h06", UPDATE)
    assert (result["status"], result["result"]["reason_code"]) == ("failed", "deadline")
    assert aborted.boots == 2 and all(aborted.said(vm, "resumed") for vm in aborted.vms)
    for host in (refused, aborted):
        states = host.vm_states()
        assert {states[vm] for vm in host.vms} == {"preserved"}, states


def test_a_rerun_after_the_fault_is_cleared_finishes_the_fleet(
    fleet: Fleet, kernels: dict[str, Path], faulty: PlaybookRun
) -> None:
    for name in FAULTY:
        fleet[name].clear_faults()
    run = rollout(fleet, kernels["C"], "C-resumed")
    assert run.returncode == 0, run.output[-4000:]
    done_before = {"h01", "h02", "h03", "h05", "h07"}
    assert run.hosts(SKIP) == done_before
    assert run.hosts(UPDATE, changed=True) == {h.name for h in fleet.hosts} - done_before
    for host in fleet.hosts:
        assert on(host, kernels["C"]), host.name
        assert host.boots == 3, host.name
    assert [len(updates(fleet[h])) for h in ("h01", "h04", "h06", "h20")] == [2, 2, 3, 2]
    print("fleet rollout timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})
