"""The VM blackout budget (bench/blackout_vm.py): its clock arithmetic (reboot() -> luod's exec
crosses a kexec, and each boot's clock is off the host's by its own amount) and its updates per
VM count, summed up together."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bench import blackout_budget, blackout_vm


def test_a_span_across_the_kexec_is_read_on_the_hosts_clock() -> None:
    """On the host's clock reboot() is at 1000.0 and the exec at 1009.0; the old boot's clock
    was 0.3 s behind the host's, the new one's (set from the CMOS clock) 0.95 s."""
    before, after = {"offset": 0.3, "error": 0.001}, {"offset": 0.95, "error": 0.001}
    span = blackout_vm.across_kexec(1000.0 - 0.3, before, 1009.0 - 0.95, after)
    assert span == pytest.approx(9.0)


def test_the_offset_to_a_file_systems_clock_is_measured(tmp_path: Path) -> None:
    """Here the file system's clock is this machine's: the offset is within its coarse tick
    (at most 10 ms at HZ=100), and the files the probe made are gone."""
    found = blackout_vm.host_offset(tmp_path)
    assert abs(found["offset"]) < 0.02 and 0 <= found["error"] < 0.02
    assert list(tmp_path.iterdir()) == []


def test_pid_1_started_after_the_kernel_and_before_now() -> None:
    assert 0 <= blackout_vm.init_started() <= time.clock_gettime(time.CLOCK_BOOTTIME)


def _sample(count: int, part2: float, fan_out: float) -> dict[str, Any]:
    row = [0.001, part2, 0.5, 1.2, 0.01, 0.02]
    return {
        "count": count,
        "parts": [row] * count,
        "fan_out": fan_out,
        "own": part2 - 1e-4,
        "first": 1.3,
        "bare": [0.3, 0.25, 0.26],
    }


def test_each_count_runs_several_updates_in_turn() -> None:
    assert blackout_vm.repeated((1, 10, 100), 3) == (1, 1, 1, 10, 10, 10, 100, 100, 100)
    assert (
        blackout_vm.repeated((1, 100)) == (1,) * blackout_vm.UPDATES + (100,) * blackout_vm.UPDATES
    )


def test_part_2_is_summed_up_over_the_updates_of_a_count() -> None:
    """Part 2 is one value an update: at 100 VMs its median is the updates' median, not the
    last update's value (one update a count kept only that, before)."""
    samples = [_sample(100, p, f) for p, f in ((5.5e-3, 0.25), (4.0e-3, 0.20), (6.0e-3, 0.30))]
    found = blackout_vm.measures_of([_sample(1, 3e-3, 0.0), *samples])
    assert len(found.parts[100]) == 300
    middle, tail = blackout_budget.summary(found.parts[100], 1) or (0.0, 0.0)
    assert middle == pytest.approx(5.5e-3)
    assert tail == pytest.approx(6.0e-3)
    assert found.fan_out[100] == [0.25, 0.20, 0.30]
    assert found.own[100] == pytest.approx([5.4e-3, 3.9e-3, 5.9e-3])
    verdicts = blackout_budget.targets(found, 0.26).splitlines()
    part2 = next(line for line in verdicts if line.startswith("pre-reboot part (2)"))
    assert "5.5 ms" in part2
    assert part2.endswith("MISS")
