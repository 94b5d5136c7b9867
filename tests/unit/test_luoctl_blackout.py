"""Where each VM's blackout went: luod splits it from the stamps in its update record
(luod.core.blackout_split), the REST API serves the parts with the record, and luoctl shows them
beside each blackout; a record without every stamp falls back to the totals."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from luod.cli import blackout, render
from luod.core import blackout_split, timeline
from luod.core.clock import Stamp
from luod.daemon import process_start
from luod.rest import history_reads, records

T0 = 1_935_000_000.0  # 2031-04-26


def at(seconds: float) -> dict[str, float]:
    return {"realtime": T0 + seconds, "monotonic": 100.0 + seconds, "boottime": seconds}


def record() -> dict[str, Any]:
    """An update record as luod keeps it (``UpdateRecord.to_dict()``). vm-a READY at 1.5 s,
    vm-b at 1.9 s; a reboot that failed (rebooting at 1.0 s) froze them again, and the kexec
    step began at 2.0 s; the new kernel started at 2.7 s, luod's process at 12.5 s, it ran at
    14.0 s and had the sessions at 14.3 s; vm-a was reclaimed at 18.8 s, done at 22.4 s."""
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
    request = {"kernel": "/boot/vmlinuz-next", "uid": 0}
    return {"id": "u1", "request": request, "phases": phases, "events": events, "vms": vms,
            "blackout": blackouts, "outcome": "completed"}  # fmt: skip


def served(data: dict[str, Any]) -> dict[str, Any]:
    """The record as the REST API serves it, and luoctl reads it."""
    return records.update_record(data).model_dump(mode="json")


def test_the_parts_of_a_vms_blackout_add_up_to_it() -> None:
    found = blackout_split.split(record())
    assert list(found["vm-a"]) == list(blackout_split.PARTS)
    assert list(found["vm-a"].values()) == pytest.approx([0.5, 0.7, 9.8, 1.5, 0.3, 4.5, 3.6])
    assert sum(found["vm-a"].values()) == pytest.approx(22.4 - 1.5)  # type: ignore[arg-type]
    assert sum(found["vm-b"].values()) == pytest.approx(21.4 - 1.9)  # type: ignore[arg-type]
    assert blackout.parts(served(record()), "vm-a") == pytest.approx(
        [0.5, 0.7, 9.8, 1.5, 0.3, 4.5, 3.6]
    )


def test_the_split_is_shown_beside_each_blackout_with_what_each_part_is() -> None:
    lines = render.blackout(served(record()), split=True)
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
    vm = "vm-b" if missing in ("done", "reclaimed") else "vm-a"
    assert vm not in blackout_split.split(doc)
    api = served(doc)
    assert vm not in api["blackout_parts"] and blackout.parts(api, vm) is None
    assert render.blackout(api, split=True) == render.blackout(api)
    assert render.blackout(api)[1].split() == ["vm-a", "20.900", "s"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda doc: doc["vms"]["vm-b"].update(reclaimed={"realtime": "soon"}),
        lambda doc: doc["vms"]["vm-b"].update(done=[1, 2]),
        lambda doc: doc["vms"].update({"vm-b": "gone"}),
        lambda doc: doc["vms"]["vm-b"].update(freeze_ack={"realtime": True}),
    ],
)
def test_a_damaged_stamp_leaves_its_vm_unsplit_and_raises_nothing(damage: Any) -> None:
    """/metrics reads every update of the history (luod.rest.history_reads.ended): a line with
    a stamp that is not one must cost that VM's split, not the scrape."""
    doc = record()
    damage(doc)
    assert set(blackout_split.split(doc)) == {"vm-a"}
    assert set(history_reads.ended(doc).blackout_parts) == {"vm-a"}


def test_a_luod_older_than_the_split_gets_the_blackouts_alone() -> None:
    """luoctl against a luod whose records have no ``blackout_parts``."""
    api = served(record())
    del api["blackout_parts"]
    assert render.blackout(api, split=True) == render.blackout(api)


def test_a_record_without_luods_exec_stamp_keeps_boot_whole() -> None:
    """An older luod's record, or a host whose /proc could not say: BOOT runs until luod ran,
    START is not known."""
    doc = record()
    del doc["events"]["luod_exec"]
    found = blackout_split.split(doc)["vm-a"]
    assert found["start"] is None
    api = served(doc)
    assert blackout.parts(api, "vm-a") == pytest.approx([0.5, 0.7, 11.3, None, 0.3, 4.5, 3.6])
    row = render.blackout(api, split=True)[2].split()
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
