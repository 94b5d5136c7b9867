"""The contract tests on the real LUO kernel, across two real kexecs (three boots)."""

from __future__ import annotations

from pathlib import Path

from tests.vm.contract_run import BOOTS, junit_cases, run_contract_in_guest, sim_test_ids

KERNEL_ONLY_MODULES = ("tests/contract/test_memfd_freeze.py",)


def test_contract_passes_on_the_real_kernel(
    luo_kernel: Path, vm_python: Path, tmp_path: Path
) -> None:
    result = run_contract_in_guest(vm_python, luo_kernel, tmp_path)
    result.check()
    assert result.boots == BOOTS
    passed: set[str] = set()
    problems = []
    for boot in range(1, BOOTS + 1):
        for case in junit_cases(result.run_dir / "share" / f"junit-{boot}.xml"):
            if case.outcome == "passed":
                passed.add(case.test_id)
            else:
                problems.append(f"boot {boot}: {case.test_id} {case.outcome}: {case.message}")
    assert not problems, "\n".join(problems)
    expected = sim_test_ids()
    missing = {i for i in expected if not _matches(i, passed)}
    assert not missing, f"contract tests that passed on sim but not on kernel: {sorted(missing)}"
    kernel_only = {i for i in passed if i.startswith(KERNEL_ONLY_MODULES)}
    assert kernel_only, "the kernel-only contract tests did not run"


def _matches(test_id: str, passed: set[str]) -> bool:
    # junit ids drop directories from the classname differently than pytest node ids do
    name = test_id.split("::", 1)[1]
    module = Path(test_id.split("::", 1)[0]).stem
    return any(p.endswith(f"{module}.py::{name}") for p in passed)
