"""The collection's modules one by one, run by ``ansible`` against one simulated host: facts,
preflight refusals naming every check, luod_update's check mode and idempotence, luod_vm show
and drop (refused by a luod without ``DELETE /v1/vms/{id}``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet.harness import PYTHON, SimHost, ansible_env, bzimage, wait_until

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHost]:
    one = SimHost("solo", tmp_path_factory.mktemp("solo"), ["solo-vm0", "solo-vm1"])
    one.start()
    try:
        yield one
    finally:
        one.stop()


def connected(host: SimHost, vm: str) -> bool:
    transport = httpx.HTTPTransport(uds=str(host.api_socket))
    with httpx.Client(transport=transport, base_url="http://luod") as client:
        return bool(client.get(f"/v1/vms/{vm}").json()["connected"])


def module(host: SimHost, name: str, check: bool = False, **args: Any) -> dict[str, Any]:
    """``ansible localhost -m luod.liveupdate.NAME``: the module's result as JSON."""
    arguments = json.dumps({"socket": str(host.api_socket), **args})
    command = [str(Path(PYTHON).parent / "ansible"), "localhost", "-c", "local", "-o"]
    command += ["-e", f"ansible_python_interpreter={PYTHON}", "-m", f"luod.liveupdate.{name}"]
    command += ["-a", arguments, *(["--check"] if check else [])]
    env = {**ansible_env(host.root / "ansible"), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    line = next(line for line in done.stdout.splitlines() if " => " in line)
    result: dict[str, Any] = json.loads(line.split(" => ", 1)[1])
    result["_status"] = line.split(" | ")[1].split(" ")[0]
    return result


def test_facts_name_the_kernel_the_vms_and_whether_the_host_is_on_target(
    host: SimHost, tmp_path: Path
) -> None:
    image = bzimage(tmp_path / "vmlinuz", "7.4.0-next")
    facts = module(host, "luod_facts", kernel=str(image))["ansible_facts"]["luod"]
    assert facts["kernel"] == "7.2.13-luodsim" and facts["phase"] == "idle"
    assert facts["vm_states"] == {"solo-vm0": "preserved", "solo-vm1": "preserved"}
    assert (facts["target_release"], facts["on_target"]) == ("7.4.0-next", False)
    assert facts["last_update"] is None and facts["vms_not_back"] == []


def test_preflight_fails_naming_every_refusing_check(host: SimHost, tmp_path: Path) -> None:
    not_a_kernel = tmp_path / "notes.txt"
    not_a_kernel.write_text("not a bzImage")
    refused = module(
        host, "luod_preflight", kernel=str(not_a_kernel), cmdline="console=ttyS0 kho=on"
    )
    assert refused["_status"] == "FAILED!" and set(refused["failed_checks"]) == {
        "kernel-image",
        "next-cmdline",
        "handover-abi",  # no image, no ABI to compare
    }
    assert "kernel-image: " in refused["msg"] and "next-cmdline: " in refused["msg"]
    assert "add liveupdate=on" in refused["msg"]  # each check's hint
    assert len(refused["checks"]) >= 9


def test_an_update_the_preflight_refuses_fails_with_the_checks_and_the_vms(
    host: SimHost, tmp_path: Path
) -> None:
    not_a_kernel = tmp_path / "notes.txt"
    not_a_kernel.write_text("not a bzImage")
    nameless = module(host, "luod_update", kernel=str(not_a_kernel))
    assert nameless["_status"] == "FAILED!" and "give target_release" in nameless["msg"]
    refused = module(host, "luod_update", kernel=str(not_a_kernel), target_release="7.9.9")
    assert refused["_status"] == "FAILED!" and refused["msg"].startswith("preflight refuses: ")
    assert (refused["outcome"], refused["reason_code"]) == ("refused", "preflight-failed")
    failed = [c["id"] for c in refused["checks"] if c["status"] == "fail"]
    assert failed == ["kernel-image", "handover-abi"]  # no image, no ABI to compare
    assert refused["vm_states"] == {vm: "preserved" for vm in host.vms}


def test_check_mode_predicts_then_an_update_then_nothing_to_do(
    host: SimHost, tmp_path: Path
) -> None:
    image = bzimage(tmp_path / "vmlinuz", "7.4.0-next")
    before = len(host.history())
    predicted = module(host, "luod_update", check=True, kernel=str(image))
    assert (predicted["_status"], predicted["changed"]) == ("CHANGED", True)
    assert predicted["outcome"] == "would-update" and len(host.history()) == before
    updated = module(host, "luod_update", kernel=str(image))
    assert (updated["_status"], updated["outcome"], updated["kernel"]) == (
        "CHANGED", "completed", "7.4.0-next",
    )  # fmt: skip
    assert set(updated["blackout_seconds"]) == set(host.vms)
    assert all(v["event"] == "verified" for v in host.verdicts)
    again = module(host, "luod_update", kernel=str(image))
    assert (again["_status"], again["changed"], again["outcome"]) == ("SUCCESS", False, "completed")
    assert len(host.history()) == before + 1
    checked = module(host, "luod_update", check=True, kernel=str(image))
    assert (checked["_status"], checked["changed"]) == ("SUCCESS", False)


def test_vm_show_and_drop_refused_while_connected_then_dropped(host: SimHost) -> None:
    shown = module(host, "luod_vm", id="solo-vm0")
    assert (shown["_status"], shown["vm"]["state"]) == ("SUCCESS", "preserved")
    assert shown["vm"]["connected"] is True
    unknown = module(host, "luod_vm", id="nobody")
    assert unknown["_status"] == "FAILED!" and "no VM 'nobody'" in unknown["msg"]
    assert module(host, "luod_vm", id="nobody", state="absent")["changed"] is False
    predicted = module(host, "luod_vm", check=True, id="solo-vm1", state="absent")
    assert (predicted["_status"], predicted["changed"]) == ("CHANGED", True)
    refused = module(host, "luod_vm", id="solo-vm1", state="absent")
    assert refused["_status"] == "FAILED!" and refused["code"] == "vm-connected"
    assert host.vm_states()["solo-vm1"] == "preserved"
    gone = host.vmms.pop("solo-vm1")  # its VMM is gone for good
    gone.kill()
    gone.wait()
    wait_until(lambda: not connected(host, "solo-vm1"), "luod sees solo-vm1's VMM gone")
    dropped = module(host, "luod_vm", id="solo-vm1", state="absent")
    assert (dropped["_status"], dropped["changed"]) == ("CHANGED", True)
    released = dropped["released"]
    assert (released["session"], released["files"], released["bytes"]) == (
        "luod.solo-vm1", 1, 256 * 1024,
    )  # fmt: skip
    assert "solo-vm1" not in host.vm_states()
    forced = module(host, "luod_vm", id="solo-vm0", state="absent", force=True)
    assert (forced["_status"], forced["changed"]) == ("CHANGED", True)
    assert "solo-vm0" not in host.vm_states()
