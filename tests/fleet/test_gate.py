"""The health gate after a batch stops the whole rollout: three simulated hosts, a blackout
budget no real update meets. The canary updates fine, fails the gate, and the play ends there:
the other two hosts are never touched, whatever max_fail_percentage would allow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fleet.harness import Fleet, bzimage, run_playbook

pytestmark = pytest.mark.fleet
GATE = "Health gate of the batch (a host failing it stops the rollout)"


@pytest.fixture
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    hosts = Fleet(tmp_path_factory.mktemp("gate"), 3, vms=1)
    hosts.start()
    try:
        yield hosts
    finally:
        hosts.stop()


def test_a_blackout_over_budget_fails_the_gate_and_stops_the_rollout(small: Fleet) -> None:
    kernel = bzimage(small.root / "boot" / "vmlinuz-gate", "7.3.4-gate")
    inventory = small.inventory(
        small.root / "inventory.json",
        rolling_update_kernel=str(kernel),
        rolling_update_blackout_budget_seconds=0.001,
    )
    run = run_playbook(inventory, small.root / "ansible", {"luod_max_fail_percentage": 100})
    assert run.returncode != 0
    gate = [r for r in run.results if r["task"].endswith(GATE)]
    assert [(r["host"], r["status"]) for r in gate] == [("h01", "failed")]
    items = [item["msg"] for item in gate[0]["result"]["results"]]
    assert items == [items[0]] and items[0].startswith("h01 fails the health gate")
    assert small["h01"].history()[-1]["outcome"] == "completed"  # it did update
    for name in ("h02", "h03"):
        assert small[name].history() == [] and small[name].boots == 1, name
    assert not small.problems()
