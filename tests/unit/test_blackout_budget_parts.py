"""bench.blackout_budget's arithmetic: part 5 ends when luod *answered* the VM's RECLAIM (the
VMM holds its files), so luod's answers, one VM after the other, are luod's part and the
fan-out's, not part 6's (issue 17 §1, §2)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bench import blackout_budget


def _run() -> dict[str, Any]:
    def stamps(sent: float, ack: float) -> dict[str, dict[str, float]]:
        return {"freeze_sent": {"realtime": sent}, "freeze_ack": {"realtime": ack}}

    vmms = [  # both sent RECLAIM at once; luod answered vm1 2 s after vm0
        SimpleNamespace(vm="vm0", reclaim_sent=100.5, reclaimed=101.0, done=101.25),
        SimpleNamespace(vm="vm1", reclaim_sent=100.5, reclaimed=103.0, done=103.5),
    ]
    record = {
        "vms": {"vm0": stamps(10.0, 10.25), "vm1": stamps(10.0, 10.5)},
        "events": {"sessions_retrieved": {"realtime": 100.0}},
    }
    return {"record": record, "rebooted": 11.0, "kernel": 1.0, "exec": 99.0, "vmms": vmms}


def test_part_5_ends_at_the_answer_and_part_6_starts_there() -> None:
    parts = blackout_budget.parts_of(_run())
    assert parts == [[0.25, 0.5, 1.0, 1.0, 1.0, 0.25], [0.5, 0.5, 1.0, 1.0, 3.0, 0.5]]


def test_the_fan_out_and_the_first_reclaim_count_answers() -> None:
    run = _run()
    assert blackout_budget.fan_out(run) == 2.0  # not 0: both were sent at once
    assert blackout_budget.first_reclaim(run) == 2.0  # exec 99 -> the first answer at 101
