"""bench/qemu_handover.py reads what crosses the kexec on the host's clock: the guest's new boot
sets its clock from the CMOS clock, to the second, so its wall clock may be up to 1 s off the
old boot's (the size of the kernel's step itself)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import qemu_handover


def measured(clocks: bool) -> dict[str, Any]:
    found: dict[str, Any] = {
        "frozen": {
            "vm": "q64",
            "stop": 100.0,
            "steps": {"stopped": 0.01, "state_saved": 0.02, "preserved": 0.03},
        },
        "record": {
            "vms": {"q64": {"freeze_ack": {"realtime": 100.05}}},
            "phases": [{"to": "rebooting", "at": {"realtime": 100.06}}],
            "events": {"luod_start": {"realtime": 101.2}},
        },
        "restored": {
            "process_start": 101.5,
            "pause": 2.0,
            "after_kexec": {
                "registered": 0.1,
                "reclaimed": 0.2,
                "qemu_started": 0.3,
                "state_loaded": 0.4,
                "cont": 0.5,
            },
        },
    }
    if clocks:  # the new boot's clock runs 0.7 s ahead of the host's, the old one's was exact
        found["clocks"] = [{"offset": 0.0, "error": 0.001}, {"offset": -0.7, "error": 0.001}]
    return found


def kexec_step(found: dict[str, Any]) -> float | None:
    return dict(qemu_handover.steps(found))["kernel: kexec -> luod started"]


def test_the_kexec_step_is_read_on_the_hosts_clock() -> None:
    assert kexec_step(measured(clocks=False)) == pytest.approx(1.14)  # the guest's clocks
    assert kexec_step(measured(clocks=True)) == pytest.approx(0.44)  # the host's


def test_the_guest_visible_pause_is_also_given_on_the_hosts_clock() -> None:
    assert qemu_handover.host_pause(measured(clocks=False)) == pytest.approx(2.0)
    assert qemu_handover.host_pause(measured(clocks=True)) == pytest.approx(1.3)


def test_the_steps_within_one_boot_do_not_change() -> None:
    without, within = qemu_handover.steps(measured(False)), qemu_handover.steps(measured(True))
    changed = [a for a, b in zip(without, within, strict=True) if a != b]
    assert [label for label, _ in changed] == ["kernel: kexec -> luod started"]
