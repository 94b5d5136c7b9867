"""Issue 4 end to end on the real kernel: VMMs write until FREEZE; three aborted updates (no
READY by the deadline, READY with an error, explicit ABORT) each resume every VMM with the
sessions intact; then prepare → freeze → kexec → reclaim, every sha256 matching (including the
writes made just before the freeze), and the history shows every phase and a blackout per VM.
vm-b has two taps on bridge br0 (one multi-queue with a vnet header): luod records them at
prepare and, after the kexec, rebuilds them and the bridge before vm-b's RECLAIM answers, with
identical attributes (issue 15)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.vm.qemu import run_guest
from tests.vm.test_datapath import stage

VMS = ("vm-a", "vm-b", "vm-c", "vm-x", "vm-y", "vm-z")
NET = ("br0", "vm-b-net0", "vm-b-net1")
TAP_DATA = ("type", "pi", "vnet_hdr", "multi_queue", "persist", "user", "group")
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
    split = {line.split()[0]: line.split() for line in after.splitlines() if line.strip()}
    header = ["WAIT", "KEXEC*", "BOOT", "START", "LUOD", "RECLAIM", "RESTORE"]
    assert split["VM"][2:] == header, after
    for vm in VMS:  # where each blackout went: the blackout, then parts adding up to it
        row = [float(cell) for cell in split[vm][1::2]]
        assert len(row) == 8 and abs(sum(row[1:]) - row[0]) < 0.01, split[vm]
    assert "luod_exec" in load(share, "history.json")["history"][-1]["events"]
    history = load(share, "history.json")["history"]  # luoctl --json history
    assert [h["outcome"] for h in history] == ["aborted", "aborted", "aborted", "completed"]
    final = history[-1]
    assert [p["to"] for p in final["phases"]] == FULL_PATH
    assert set(final["events"]) >= {"kernel_boot", "luod_start", "sessions_retrieved"}
    blackout = final["blackout_seconds"]
    assert set(blackout) == set(VMS) and all(b is not None and b > 0 for b in blackout.values())
    for vm, parts in final["blackout_parts"].items():  # the REST API's split, as /metrics's
        assert abs(sum(p or 0.0 for p in parts.values()) - blackout[vm]) < 0.001, (vm, parts)
    assert set(final["blackout_parts"]) == set(VMS) and final["blackout_parts"]["vm-a"]["start"]
    check_nics(share)
    assert "nics_rebuilt" in final["vms"]["vm-b"] and "nics_rebuilt" not in final["vms"]["vm-a"]
    # the uplink recorded at prepare (rtnetlink), seen up again after the kexec (sysfs)
    assert final["request"]["uplink"] == "up0", final["request"]
    up, started = (datetime.fromisoformat(final["events"][e]) for e in ("uplink_up", "luod_start"))
    assert up >= started, final["events"]


def links(share: Path, name: str) -> dict[str, dict[str, Any]]:
    """What ``ip -d -j link show`` says of vm-b's devices, the attributes luod rebuilds."""
    found = {}
    for link in load(share, name):
        if link["ifname"] in NET:
            info = link.get("linkinfo", {})
            data = info.get("info_data", {})
            found[link["ifname"]] = {
                "address": link["address"],
                "mtu": link["mtu"],
                "txqlen": link.get("txqlen"),
                "master": link.get("master"),
                "up": "UP" in link["flags"],
                "kind": info.get("info_kind"),
                "tun": {key: data.get(key) for key in TAP_DATA} if "type" in data else None,
                "stp": data.get("stp_state"),
                "forward_delay": data.get("forward_delay"),
            }
    return found


def check_nics(share: Path) -> None:
    before, after = links(share, "links-before.json"), links(share, "links-after.json")
    assert set(before) == set(NET) and after == before
    net0 = before["vm-b-net0"]["tun"]
    assert net0 is not None and net0["multi_queue"] and net0["vnet_hdr"]
    assert before["vm-b-net0"]["master"] == "br0" and before["br0"]["stp"] == 1
    verdict = json.loads((share / "vm-b-reclaim.log").read_text().splitlines()[-1])
    nics = verdict["nics"]
    assert nics["ready"] and nics["exact"] and nics["problems"] == [], nics
    assert {d["name"]: d["status"] for d in nics["devices"]} == dict.fromkeys(NET, "rebuilt")
    assert json.loads((share / "vm-a-reclaim.log").read_text().splitlines()[-1])["nics"] is None
