"""The collection on the real kernel: in the LUO test VM (tests/vm/qemu.py), ansible-playbook
with a local connection runs luod_update across a real kexec from 7.2.13 into 7.3.4. The kexec
ends the play with the old kernel; the next boot runs it again, which waits for the reclaim and
reads the outcome from luod. Every VM's memory is checked byte for byte (sha256)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.vm.qemu import run_guest

pytestmark = [pytest.mark.vm, pytest.mark.fleet]
REPO = Path(__file__).resolve().parents[2]
FLEET_VM = Path(__file__).resolve().parent / "vm"
VM_SCRIPTS = REPO / "tests" / "vm" / "scripts"
NEXT_NAME = "bzImage-7.3.4-luo"
VMS = ("vm-a", "vm-b", "vm-c")
UPDATE = "Live-update the kernel, across the kexec"


def next_kernel(current: Path) -> Path:
    """A LUO kernel of another release than ``current`` (what a rollout is about):
    $LUOD_TEST_NEXT_KERNEL, or the checksummed 7.3.4 beside the shared 7.2.13."""
    if path := os.environ.get("LUOD_TEST_NEXT_KERNEL"):
        return Path(path)
    for directory in (REPO.parent / "shared" / "kernel", current.parent):
        image, sums = directory / NEXT_NAME, directory / "SHA256SUMS"
        if image.is_file() and sums.is_file() and _checksum_ok(image, sums):
            return image
    pytest.fail(
        f"no {NEXT_NAME} (a second LUO kernel release) beside {current} or in "
        "../shared/kernel: set LUOD_TEST_NEXT_KERNEL",
        pytrace=False,
    )


def _checksum_ok(image: Path, sums: Path) -> bool:
    wanted = {
        line.split()[-1].lstrip("*"): line.split()[0]
        for line in sums.read_text().split("\n")
        if line.strip()
    }
    return wanted.get(image.name) == hashlib.sha256(image.read_bytes()).hexdigest()


def stage(script: str, vm_python: Path, kernel: Path, running: Path) -> str:
    """``running``: the image this boot runs (luod's kexec.running_image: handover-abi)."""
    venv = vm_python.parent.parent
    quoted = {k: shlex.quote(str(v)) for k, v in
              {"VENV": venv, "SCRIPTS": VM_SCRIPTS, "FLEET": FLEET_VM, "REPO": REPO,
               "NEXT_KERNEL": kernel, "RUNNING_KERNEL": running}.items()}  # fmt: skip
    assignments = "; ".join(f"{k}={v}" for k, v in quoted.items())
    return (
        f"{assignments}; SHARE=$LUOD_VM_SHARE\n"
        f"cd {quoted['REPO']}\n"
        f". {shlex.quote(str(FLEET_VM / script))}\n"
    )


def load(share: Path, name: str) -> Any:
    return json.loads((share / name).read_text())


def results(share: Path, boot: int) -> dict[str, dict[str, Any]]:
    """Each task's result in the play of ``boot`` (tests/fleet/callback_plugins)."""
    path = share / f"record-{boot}.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {line["task"]: line for line in lines if "task" in line}


@pytest.mark.timeout(1800)
def test_luod_update_across_a_real_kexec_resumes_after_the_reboot(
    luo_kernel: Path, vm_python: Path, tmp_path: Path
) -> None:
    target = next_kernel(luo_kernel)
    stages = [
        stage("stage-1.sh", vm_python, target, luo_kernel),
        stage("stage-2.sh", vm_python, target, target),
    ]
    result = run_guest(stages, kernel=luo_kernel, timeout=1500, workdir=tmp_path)
    share = result.share
    result.check()
    assert result.boots == 2
    before = (share / "release-1").read_text().strip()
    after = (share / "release-2").read_text().strip()
    first, second = results(share, 1), results(share, 2)
    facts = first["Read luod's facts before"]["result"]["ansible_facts"]["luod"]
    assert facts["kernel"] == before and facts["target_release"] == after != before
    assert facts["on_target"] is False and set(facts["vm_states"]) == set(VMS)
    assert UPDATE not in first  # the kexec ended the first play in that task
    update = second[UPDATE]
    assert update["status"] == "ok", update
    found = update["result"]
    assert (found["outcome"], found["kernel"], found["target_release"]) == (
        "completed", after, after,
    )  # fmt: skip
    assert found["update"]["kernel"] == str(target)
    assert set(found["blackout_seconds"]) == set(VMS)
    assert all(b is not None and b > 0 for b in found["blackout_seconds"].values())
    done = second["Read luod's facts after"]["result"]["ansible_facts"]["luod"]
    assert done["kernel"] == after and done["on_target"] is True and done["vms_not_back"] == []
    for vm in VMS:
        recorded = load(share, f"{vm}.json")["files"]
        verdict = json.loads((share / f"{vm}-reclaim.log").read_text().splitlines()[-1])
        assert verdict["event"] == "verified" and all(verdict["files"].values()), verdict
        assert verdict["sha256"] == {name: f["sha256"] for name, f in recorded.items()}
    history = load(share, "history.json")["history"]
    assert history[-1]["outcome"] == "completed" and history[-1]["id"] == found["update"]["id"]
