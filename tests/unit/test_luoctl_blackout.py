"""luoctl's split of each VM's blackout (luod.cli.blackout): from luod's stamps in the record,
the parts add up to the blackout, and a record without every stamp falls back to the totals."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from luod.cli import blackout, render
from luod.core import timeline
from luod.core.clock import Stamp
from luod.daemon import process_start


def at(seconds: float) -> str:
    return f"2031-05-01T12:00:{seconds:09.6f}+00:00"


def record() -> dict[str, Any]:
    """vm-a READY at 0.5 s, vm-b at 0.9 s; a reboot that failed (rebooting at 1.0 s) froze
    them again, and the kexec step began at 2.0 s; the new kernel started at 2.7 s, luod's
    process at 12.5 s, it ran at 14.0 s and had the sessions at 14.3 s; vm-a was reclaimed at
    18.8 s, done at 22.4 s."""
    phases = [
        {"from": "frozen", "to": "rebooting", "at": at(1.0), "reason": "kexec (direct)"},
        {"from": "rebooting", "to": "prepared", "at": at(1.1), "reason": "reboot failed"},
        {"from": "frozen", "to": "rebooting", "at": at(2.0), "reason": "kexec (direct)"},
    ]
    events = {"kernel_boot": at(2.7), "luod_exec": at(12.5), "luod_start": at(14.0)}
    events["sessions_retrieved"] = at(14.3)
    vms = {
        "vm-a": {"freeze_ack": at(1.5), "reclaimed": at(18.8), "done": at(22.4)},
        "vm-b": {"freeze_ack": at(1.9), "reclaimed": at(17.0), "done": at(21.4)},
    }
    blackouts = {"vm-a": 20.9, "vm-b": 19.5}
    return {"phases": phases, "events": events, "vms": vms, "blackout_seconds": blackouts}


def test_the_parts_of_a_vms_blackout_add_up_to_it() -> None:
    found = blackout.parts(record(), "vm-a")
    assert found == pytest.approx([0.5, 0.7, 9.8, 1.5, 0.3, 4.5, 3.6])
    assert sum(part or 0.0 for part in found or []) == pytest.approx(22.4 - 1.5)


def test_the_split_is_shown_beside_each_blackout_with_what_each_part_is() -> None:
    lines = render.blackout(record(), split=True)
    assert lines[0] == "blackout per VM:"
    assert lines[1].split() == ["VM", "BLACKOUT", "WAIT", "KEXEC*", "BOOT", "START", "LUOD",
                                "RECLAIM", "RESTORE"]  # fmt: skip
    row = lines[2].split()
    assert row[0] == "vm-a" and row[2::2] == ["s"] * 8
    assert row[1::2] == ["20.900", "0.500", "0.700", "9.800", "1.500", "0.300", "4.500", "3.600"]
    assert lines[4].split() == ["longest", "20.900", "s"]
    assert [line.split()[0] for line in lines[5:]] == [name for name, _ in blackout.STEPS]


@pytest.mark.parametrize("missing", ["done", "reclaimed", "luod_start", "rebooting"])
def test_without_every_stamp_only_the_blackouts_are_shown(missing: str) -> None:
    """An aborted update (no kexec), one still reclaiming, a record of an older luod."""
    doc = record()
    if missing == "rebooting":
        doc["phases"] = []
    elif missing == "luod_start":
        del doc["events"]["luod_start"]
    else:
        del doc["vms"]["vm-b"][missing]
    assert blackout.parts(doc, "vm-b" if missing in ("done", "reclaimed") else "vm-a") is None
    assert render.blackout(doc, split=True) == render.blackout(doc)
    assert render.blackout(doc)[1].split() == ["vm-a", "20.900", "s"]


def test_a_record_without_luods_exec_stamp_keeps_boot_whole() -> None:
    """An older luod's record, or a host whose /proc could not say: BOOT runs until luod ran,
    START is not known."""
    doc = record()
    del doc["events"]["luod_exec"]
    assert blackout.parts(doc, "vm-a") == pytest.approx([0.5, 0.7, 11.3, None, 0.3, 4.5, 3.6])
    row = render.blackout(doc, split=True)[2].split()
    assert row[7:10] == ["11.300", "s", "-"]


def test_luods_exec_is_read_from_proc_and_placed_on_the_records_clocks(tmp_path: Path) -> None:
    """starttime is field 22 of /proc/PID/stat, after a name that may hold ") " itself."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    fields = ["S", *["0"] * 18, str(12 * ticks), "0"]  # fields 3..23
    stat.write_text(f"4242 (py) thon) {' '.join(fields)}\n")
    assert process_start.since_boot(stat) == pytest.approx(12.0)
    assert process_start.since_boot(tmp_path / "absent") is None
    assert process_start.since_boot() is not None  # this process, on this Linux
    now = Stamp(realtime=1000.0, monotonic=500.0, boottime=20.0)
    assert timeline.since_boot_stamp(now, 12.0) == Stamp(992.0, 492.0, 12.0)
    assert timeline.since_boot_stamp(now, None) is None
    assert timeline.since_boot_stamp(now, 21.0) is None  # after now: another clock's
