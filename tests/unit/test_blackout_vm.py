"""The VM blackout budget's clock arithmetic (bench/blackout_vm.py): reboot() -> luod's exec
crosses a kexec, and each boot's clock is off the host's by its own amount."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench import blackout_vm


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
