"""Run tests/contract with the real-kernel backend in a guest, one pytest run per boot."""

from __future__ import annotations

import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from tests.vm.qemu import GuestResult, run_guest

REPO = Path(__file__).resolve().parents[2]
BOOTS = 3


@dataclass(frozen=True)
class CaseResult:
    test_id: str
    outcome: str  # passed | failed | error | skipped
    message: str


def stage_script(python: Path, boot: int, kernel: Path, selection: str) -> str:
    env = {
        "LUOD_CONTRACT_BACKENDS": "kernel",
        "LUOD_CONTRACT_STAGE": str(boot),
        "LUOD_CONTRACT_LAST_STAGE": str(BOOTS),
        "LUOD_NEXT_KERNEL": str(kernel),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (
        f"cd {shlex.quote(str(REPO))}\n"
        f'export {exports} LUOD_CONTRACT_STATE="$LUOD_VM_SHARE/contract-state.json"\n'
        f"exec {shlex.quote(str(python))} -m pytest {selection} -p no:cacheprovider -q "
        f'-o addopts="" --timeout=300 --junitxml="$LUOD_VM_SHARE/junit-{boot}.xml"\n'
    )


def run_contract_in_guest(
    python: Path,
    kernel: Path,
    workdir: Path,
    selection: str = "tests/contract",
    timeout: float = 480,
) -> GuestResult:
    stages = [stage_script(python, boot, kernel, selection) for boot in range(1, BOOTS + 1)]
    return run_guest(stages, kernel=kernel, timeout=timeout, workdir=workdir)


def junit_cases(path: Path) -> list[CaseResult]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/") + ".py"
        test_id = f"{module}::{case.get('name')}"
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            child = case.find(kind)
            if child is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (child.get("message") or "") + "\n" + (child.text or "")
        cases.append(CaseResult(test_id, outcome, message))
    return cases


def sim_test_ids(selection: str = "tests/contract") -> set[str]:
    """The contract test ids collected for the sim backend, as kernel ids."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            selection,
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"LUOD_CONTRACT_BACKENDS": "sim", "PATH": "/usr/bin:/bin"},
    )
    ids = {line for line in done.stdout.splitlines() if "::" in line}
    return {i.replace("[sim", "[kernel") for i in ids}
