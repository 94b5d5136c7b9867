"""Issue 3 end to end on the real kernel: three demo VMMs hand over (two handover, one
delegation), luod is kill -9'd and restarted before the kexec and again after it, and every
VM gets byte-identical memory back; nothing stays reserved afterwards."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from tests.vm.qemu import GuestResult, run_guest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
MIB = 1 << 20
PRESERVED_BYTES = (64 * MIB + 4096) + (8 * MIB + 16 * MIB) + 16 * MIB  # vm-a, vm-b, vm-c
KHO_OVERHEAD_KB = 64


def stage(script: str, vm_python: Path, kernel: Path) -> str:
    venv = vm_python.parent.parent
    return (
        f"VENV={shlex.quote(str(venv))}; SCRIPTS={shlex.quote(str(SCRIPTS))}\n"
        f"NEXT_KERNEL={shlex.quote(str(kernel))}; SHARE=$LUOD_VM_SHARE\n"
        f"cd {shlex.quote(str(REPO))}\n"
        f". {shlex.quote(str(SCRIPTS / script))}\n"
    )


def run_datapath(luo_kernel: Path, vm_python: Path, workdir: Path) -> GuestResult:
    stages = [stage(f"datapath-{n}.sh", vm_python, luo_kernel) for n in (1, 2)]
    return run_guest(stages, kernel=luo_kernel, timeout=540, workdir=workdir)  # +keeper loss


def test_handover_kill9_kexec_kill9_reclaim(
    luo_kernel: Path, vm_python: Path, tmp_path: Path
) -> None:
    result = run_datapath(luo_kernel, vm_python, tmp_path)
    share = result.run_dir / "share"
    result.check()
    assert result.boots == 2
    restarted = json.loads((share / "list-after-restart.json").read_text())
    assert {v["id"]: v["state"] for v in restarted} == {"vm-a": "preserved", "vm-b": "preserved"}
    # The keeper killed: luod logged the loss at error level, a new keeper got every session,
    # and a luod killed after that took them back from it alone (issue 13 §5).
    events = _events(share / "luod-1b.log")
    lost = [e for e in events if e["event"] == "custody-lost"]
    assert lost and lost[0]["level"] == "error"
    assert [e["sessions"] for e in events if e["event"] == "custody-renewed"] == [3]
    after_loss = json.loads((share / "list-after-keeper-loss.json").read_text())
    assert {v["id"]: v["state"] for v in after_loss} == dict.fromkeys(
        ("vm-a", "vm-b", "vm-p"),
        "preserved",  # vm-p: partial_preserve.py's
    )
    after_kexec = json.loads((share / "list-after-kexec.json").read_text())
    assert {v["id"]: v["state"] for v in after_kexec} == dict.fromkeys(
        ("vm-a", "vm-b", "vm-c", "vm-p"), "incoming"
    )
    _check_partial_preserve(share)
    for vm in ("vm-a", "vm-b", "vm-c"):
        verdict = _last_event(share / f"{vm}-reclaim.log")
        assert verdict["event"] == "verified", verdict
        assert all(verdict["files"].values()) and verdict["files"]
    assert json.loads((share / "list-after-reclaim.json").read_text()) == []
    # vm-b's RECLAIM, from a cgroup of its own, forked luod and started the kept retrieve helper
    # (luod.kernel.retriever); vm-a's, from another, went through that helper. vm-a's 64 MiB were
    # charged to its VMM's cgroup (docs/kernel.md §6.4: the retrieving task's memcg); its VMM
    # only reads them, which charges nothing: retrieved from outside that cgroup, the pages
    # would sit in luod's instead. And the helper went back to luod's cgroup after each, so
    # that both cgroups could be removed (a systemd unit's stop removes its cgroup).
    served = {e["cgroup"]: e["via"] for e in _events(share / "luod-2b.log")
              if e["event"] == "retrieved-in-cgroup"}  # fmt: skip
    assert (served.get("/vm-b"), served.get("/vm-a")) == ("fork", "helper"), served
    vm_a_peak = int((share / "memory-peak-vm-a").read_text())
    assert vm_a_peak >= 64 * MIB, f"vm-a's cgroup peaked at {vm_a_peak} bytes"
    vm_b_peak = int((share / "memory-peak-vm-b").read_text())
    assert vm_b_peak >= 24 * MIB, f"vm-b's cgroup peaked at {vm_b_peak} bytes"
    for vm in ("vm-a", "vm-b"):
        assert (share / f"procs-{vm}-after").read_text().split() == [], vm
        assert (share / f"rmdir-{vm}").read_text().strip() == "removed", vm
    before, boot2, after = (
        int((share / f"memtotal-{name}").read_text()) for name in ("before", "boot2", "after")
    )
    released = (after - boot2) * 1024
    assert released >= PRESERVED_BYTES, f"only {released} of {PRESERVED_BYTES} bytes released"
    # The kexec'd kernel keeps a few pages of KHO bookkeeping (16 kB measured on 7.2.13).
    assert abs(before - after) <= KHO_OVERHEAD_KB, f"MemTotal {before} kB before, {after} after"


def _check_partial_preserve(share: Path) -> None:
    """Issue 13, finding 8 on the real kernel: an O_PATH fd preserves nothing of its request; a
    kind only the kernel refuses leaves the files before it preserved, on record, and they cross
    the kexec with the rest sent again (tests/vm/scripts/partial_preserve.py)."""
    hand = json.loads((share / "partial-hand.json").read_text())
    assert (hand["o_path"]["code"], hand["o_path"]["errno"]) == ("bad-fd", 9), hand
    assert hand["after_o_path"] == [], hand
    assert hand["vfio"]["code"] == "luo-enoent" and "ram0" in hand["vfio"]["message"], hand
    assert hand["files"] == ["ram0", "dev0"], hand  # dev0 sent again, as a memfd
    reclaimed = json.loads((share / "partial-reclaim.json").read_text())
    expected = {"ram0": "partial preserve survives", "dev0": "device state, sent again"}
    assert reclaimed == {"content": expected}, reclaimed


def _last_event(log: Path) -> dict[str, Any]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines, f"{log.name}: no result line:\n{log.read_text()}"
    return dict(json.loads(lines[-1]))


def _events(path: Path) -> list[dict[str, Any]]:
    """luod's JSON log lines in ``path``."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
