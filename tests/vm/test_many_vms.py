"""Hundreds of VMs across a real kexec (issue 17's scale; tests/vm/scripts/many_vms.py): 400
VMs handed over at once to a luod started under a shell's soft fd limit of 1024 (each VM costs
luod three fds: it ran out at about 340 before it raised its limit), a real kexec, then every
VM reclaims at once (luod's listen backlog held 128) and finds its memory as it was."""

from __future__ import annotations

import json
from pathlib import Path

from tests.vm.qemu import run_guest
from tests.vm.test_datapath import stage

VMS = 400


def test_400_vms_at_once_across_a_real_kexec(
    luo_kernel: Path, vm_python: Path, tmp_path: Path
) -> None:
    stages = [stage(f"many-{n}.sh", vm_python, luo_kernel) for n in (1, 2)]
    result = run_guest(stages, kernel=luo_kernel, timeout=900, workdir=tmp_path)
    share = result.run_dir / "share"
    result.check()
    assert result.boots == 2
    assert (share / "stage-soft-limit").read_text().strip() == "1024"
    soft, hard = (share / "luod-limits").read_text().split()[3:5]
    assert soft == hard and int(soft) > 1024  # luod raised its own
    verdict = json.loads((share / "many-verdict.json").read_text())
    assert verdict == {"verified": VMS, "bad": [], "outcome": "completed", "blackouts": VMS}
