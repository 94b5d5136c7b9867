"""Issue 4 end to end on the real kernel: VMMs write until FREEZE; three aborted updates (no
READY by the deadline, READY with an error, explicit ABORT) each resume every VMM with the
sessions intact; then prepare → freeze → kexec → reclaim, every sha256 matching (including the
writes made just before the freeze), and the history shows every phase and a blackout per VM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.vm.qemu import run_guest
from tests.vm.test_datapath import stage

VMS = ("vm-a", "vm-b", "vm-c", "vm-x", "vm-y", "vm-z")
FULL_PATH = ["preparing", "prepared", "freezing", "frozen", "rebooting", "reclaiming", "idle"]


def load(share: Path, name: str) -> Any:
    return json.loads((share / name).read_text())


def _text(share: Path, name: str) -> str:
    return (share / name).read_text()


def test_aborts_then_update_across_kexec(luo_kernel: Path, vm_python: Path, tmp_path: Path) -> None:
    stages = [stage(f"update-{n}.sh", vm_python, luo_kernel) for n in (1, 2)]
    result = run_guest(stages, kernel=luo_kernel, timeout=720, workdir=tmp_path)
    share = result.run_dir / "share"
    result.check()
    assert result.boots == 2
    deadline = load(share, "abort-deadline.json")["update"]
    assert deadline["outcome"] == "aborted" and "deadline" in deadline["reason"]
    refused = load(share, "abort-refused.json")["update"]
    assert refused["outcome"] == "aborted" and "refuses" in refused["reason"]
    explicit = load(share, "abort-explicit.json")["update"]
    assert explicit["outcome"] == "aborted" and "abort" in explicit["reason"]
    assert int((share / "vm-b-resumes").read_text()) == 3
    states = {v["id"]: v["state"] for v in load(share, "list-after-aborts.json")}
    assert states == dict.fromkeys(VMS, "preserved")
    for vm in VMS:
        verdict = json.loads((share / f"{vm}-reclaim.log").read_text().splitlines()[-1])
        assert verdict["event"] == "verified" and all(verdict["files"].values()), verdict
    assert "freezing" in (share / "update-watch.txt").read_text()  # live progress was shown
    assert (share / "wait-timeout.rc").read_text().strip() == "6"  # luoctl update wait
    assert "timed out after 5 s: " in _text(share, "wait-timeout.txt")  # freezing, under load
    assert (share / "wait-abort.rc").read_text().strip() == "4"
    assert " aborted (by uid 0)" in _text(share, "wait-abort.txt")
    after = _text(share, "wait-after-kexec.txt")
    assert (share / "wait-after-kexec.rc").read_text().strip() == "0", after
    assert " completed" in after.splitlines()[0] and "blackout per VM:" in after
    history = load(share, "history.json")["history"]  # luoctl --json history
    assert [h["outcome"] for h in history] == ["aborted", "aborted", "aborted", "completed"]
    final = history[-1]
    assert [p["to"] for p in final["phases"]] == FULL_PATH
    assert set(final["events"]) >= {"kernel_boot", "luod_start", "sessions_retrieved"}
    blackout = final["blackout_seconds"]
    assert set(blackout) == set(VMS) and all(b is not None and b > 0 for b in blackout.values())
