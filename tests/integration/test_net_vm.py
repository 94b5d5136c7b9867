"""The network-namespace tests of luod.net (test_net_rebuild.py) again, on the LUO test kernel
in the QEMU guest: the kernel that luod rebuilds taps on after a kexec is the judge. Bridge
VLANs are exercised when that kernel has CONFIG_BRIDGE_VLAN_FILTERING (the test says so when
it has not)."""

from __future__ import annotations

import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.vm.qemu import KernelUnavailable, resolve_kernel, run_guest

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]
VLAN_TEST = "test_vlans_on_the_bridge_ports_come_back"


def test_net_rebuild_tests_pass_on_the_luo_kernel(tmp_path: Path) -> None:
    try:
        kernel = resolve_kernel()
    except KernelUnavailable as error:
        pytest.fail(f"no LUO test kernel: {error}", pytrace=False)
    python = shlex.quote(str(Path(sys.executable).absolute()))
    stage = (
        f"cd {shlex.quote(str(REPO))} && exec {python} -m pytest -q -p no:cacheprovider"
        ' tests/integration/test_net_rebuild.py --junitxml="$LUOD_VM_SHARE/net.xml"'
    )
    result = run_guest([stage], kernel=kernel, timeout=420, workdir=tmp_path).check()
    cases = ET.parse(result.share / "net.xml").getroot().iter("testcase")
    outcomes = {case.get("name"): _outcome(case) for case in cases}
    assert len(outcomes) >= 7 and set(outcomes.values()) <= {"passed", "skipped"}, outcomes
    skipped = {name for name, outcome in outcomes.items() if outcome == "skipped"}
    assert skipped <= {VLAN_TEST}, f"skipped in the guest: {skipped}"
    if skipped:
        print(f"{kernel.name}: no bridge VLAN filtering, {VLAN_TEST} skipped in the guest")


def _outcome(case: ET.Element) -> str:
    if case.find("skipped") is not None:
        return "skipped"
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    return "passed"
