"""The QEMU blackout budget's arithmetic (bench/blackout_qemu.py): the six parts per VM from
luod's record, the kexec read on the host's clock, each VM's pause corrected to it."""

from __future__ import annotations

import datetime
import errno
import json
import time
from pathlib import Path
from typing import Any

import pytest

from bench import blackout_qemu, blackout_vm


def stamp(at: float) -> dict[str, float]:
    return {"realtime": at, "monotonic": 0.0, "boottime": 0.0}


def record() -> dict[str, Any]:
    """Two VMs: FREEZE at 100.0, READYs 0.4 and 0.6 s later (boot 1's clock); in boot 2 the
    sessions retrieved at 503.0, RECLAIMs answered at 503.5 and 504.0, DONEs at 505.0, 506.5."""
    vms = {
        "q1": {"freeze_sent": 100.0, "freeze_ack": 100.6, "reclaimed": 504.0, "done": 506.5},
        "q0": {"freeze_sent": 100.0, "freeze_ack": 100.4, "reclaimed": 503.5, "done": 505.0},
    }
    return {
        "vms": {vm: {k: stamp(v) for k, v in steps.items()} for vm, steps in vms.items()},
        "events": {"sessions_retrieved": stamp(503.0)},
        "outcome": "completed",
    }


def test_the_six_parts_come_from_luods_stamps() -> None:
    parts = blackout_qemu.parts_of(record(), rebooted=100.65, kernel=0.7, exec_at=501.0)
    assert list(parts) == ["q0", "q1"]
    assert parts["q0"] == pytest.approx([0.4, 0.05, 0.7, 2.0, 0.5, 1.5])
    assert parts["q1"] == pytest.approx([0.6, 0.05, 0.7, 2.0, 1.0, 2.5])


def test_a_sample_reads_the_kexec_and_the_pauses_on_the_hosts_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Boot 1's clock is 0.2 s behind the host's, boot 2's 1.0 s: reboot() at 100.65 (boot 1)
    and luod's exec at 501.0 (boot 2) are 401.15 s apart on the host's clock; PID 1 started
    0.5 s and luod 3.0 s after the new kernel, so the kernel's part is 398.65 s. A pause
    luod-qemu reports as 404.0 s on the two boots' clocks is 404.8 s on the host's."""
    monkeypatch.setenv("LUOD_VM_STAGE", "2")
    monkeypatch.setenv("LUOD_VM_SHARE", str(tmp_path))
    kexec_at = datetime.datetime.fromtimestamp(100.65, datetime.UTC).isoformat()
    line = {"event": "kexec", "timestamp": kexec_at, "sync_ms": 10.0}
    (tmp_path / "luod-1.log").write_text("not json\n" + json.dumps(line) + "\n")
    (tmp_path / "clock-1.json").write_text(json.dumps({"offset": 0.2, "error": 0.001}))
    run = {
        "record": record(),
        "exec": 501.0,
        "clock": {"offset": 1.0, "error": 0.002},
        "since_boot": {"exec": 3.0, "init": 0.5},
        "restored": {"q0": {"pause": 404.0}, "q1": {"pause": 406.0}},
    }
    sample = blackout_qemu.sample_of(run, 2)
    assert sample["count"] == 2
    assert sample["kernel"]["reboot_to_start"] == pytest.approx(401.15 - 3.0)
    assert sample["parts"][0][2] == pytest.approx(401.15 - 2.5)
    assert sample["pauses"] == pytest.approx({"q0": 404.8, "q1": 406.8})
    assert sample["fan_out"] == pytest.approx(0.5)
    assert sample["first"] == pytest.approx(2.5)
    assert sample["own"] == pytest.approx(0.05 - 0.01)
    assert sample["clock_error"] == pytest.approx(0.003)
    measures = blackout_vm.measures_of([{**sample, "bare": [0.9, 0.4, 0.5, 0.6]}])
    assert measures.parts[2] == sample["parts"] and measures.bare == [0.5]
    shown = blackout_qemu.pause_table([sample]).splitlines()[-1].split()
    assert shown[:7] == ["2", "406", "s", "407", "s", "403", "s"]  # median, p99, without init
    assert shown[-5:-3] == ["10", "ms"]  # the host's sync(2) in part 2


def test_a_report_9p_cannot_read_yet_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """9p answers ENODATA to a read while luod-qemu appends to its log (a make bench run died of
    it): the wait reads again instead of failing; any other error is raised."""
    monkeypatch.setenv("LUOD_VM_SHARE", str(tmp_path))
    monkeypatch.setenv("LUOD_VM_STAGE", "2")
    log = tmp_path / "q0-2.log"
    log.write_text('{"event": "restored", "at": 1.0}\n')
    reads = {"left": 2}
    real = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == log and reads["left"]:
            reads["left"] -= 1
            raise OSError(errno.ENODATA, "No data available")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    assert blackout_qemu.wait_for_event("q0", "restored", timeout=60) == {
        "event": "restored",
        "at": 1.0,
    }
    assert reads["left"] == 0

    def broken(self: Path, *args: Any, **kwargs: Any) -> str:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "read_text", broken)
    with pytest.raises(OSError, match="Input/output error"):
        blackout_qemu.wait_for_event("q0", "restored", timeout=60)
