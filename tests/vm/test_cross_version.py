"""Issue 14 §2-§3 on the real kernels: live updates across kernel versions, and the handover-ABI
preflight that refuses the one that would panic.

- 7.2.13 → 7.3.4 → 7.2.13 with luod and a demo VMM per hop: the preflight passes with the
  strings read from both images and debugfs, and each VM's memory comes back byte for byte.
  The chain is a qualification (``luoctl qualify start --chain A,B,A --with-vms``, issue 14
  §1): luod's canaries cross both kexecs beside the VMs, every byte and property checked in
  each next kernel, and each VM's reclaim checked too; luod takes the step back itself.
  Without ``--with-vms`` it is refused.
- 7.2.13 → the abi-v6 kernel (LUO ABI ``luo-v6``): refused by the preflight and by
  ``update start``, naming ``luo-v5`` and ``luo-v6``; no kexec happens and the VMM keeps
  running (same guest run as the chain: its boot 2 is 7.3.4).
- The same kexec forced past luod (raw kexec_file_load + reboot) with a memfd preserved: the
  abi-v6 kernel panics at boot. That is what the preflight prevents.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.vm.qemu import GET_KERNEL, GuestResult, run_guest, tail
from tests.vm.test_datapath import REPO, SCRIPTS

pytestmark = pytest.mark.timeout(1500)  # the three-boot guest: minutes under TCG, shared CPUs
K72, K73, V6 = "bzImage-7.2.13-luo", "bzImage-7.3.4-luo", "bzImage-7.3.4-luo-abi-v6"
PASSING = "kho-v4, luo-v5, memfd-v2 on both sides ({}); 4 KiB pages"


def kernel_named(name: str) -> Path:
    """tests/vm/get-kernel NAME (../shared/kernel, checksum-verified; the cache; a build)."""
    done = subprocess.run([str(GET_KERNEL), name], capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        pytest.skip(f"kernel {name} unavailable: {GET_KERNEL} {name} said:\n{tail(done.stderr)}")
    return Path(lines[-1])


@pytest.fixture(scope="module")
def kernels() -> dict[str, Path]:
    return {name: kernel_named(name) for name in (K72, K73, V6)}


def stage(script: str, vm_python: Path, **kernels: Path) -> str:
    exports = "".join(f"{k}={shlex.quote(str(v))}; " for k, v in kernels.items())
    venv = vm_python.parent.parent
    return (
        f"VENV={shlex.quote(str(venv))}; SCRIPTS={shlex.quote(str(SCRIPTS))}\n"
        f"SHARE=$LUOD_VM_SHARE; {exports}\ncd {shlex.quote(str(REPO))}\n"
        f". {shlex.quote(str(SCRIPTS / script))}\n"
    )


@pytest.fixture(scope="module")
def chain(
    kernels: dict[str, Path], vm_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> GuestResult:
    k72, k73, v6 = kernels[K72], kernels[K73], kernels[V6]
    stages = [
        stage("chain-1.sh", vm_python, RUNNING_KERNEL=k72, NEXT_KERNEL=k73, ABI_V6_KERNEL=v6),
        stage("chain-2.sh", vm_python, RUNNING_KERNEL=k73, NEXT_KERNEL=k72),
        stage("chain-3.sh", vm_python, RUNNING_KERNEL=k72, NEXT_KERNEL=k72),
    ]
    # ~3 min on an idle 2-core host (+ the nested QEMU canary); room for a shared machine
    return run_guest(stages, kernel=k72, timeout=1200, workdir=tmp_path_factory.mktemp("chain"))


def load(share: Path, name: str) -> Any:
    return json.loads((share / name).read_text())


def abi_check(preflight: dict[str, Any]) -> dict[str, str]:
    return next(c for c in preflight["checks"] if c["id"] == "handover-abi")


def verified(share: Path, vm: str) -> None:
    lines = [ln for ln in (share / f"{vm}-reclaim.log").read_text().splitlines() if ln[:1] == "{"]
    verdict = json.loads(lines[-1])
    assert verdict["event"] == "verified" and verdict["files"], verdict
    assert all(verdict["files"].values()), verdict  # every region's sha256 matched


def liveupdate_number(dmesg: str) -> int | None:
    found = re.search(r"liveupdate number: (\d+)", dmesg)
    return int(found.group(1)) if found else None


def test_7_2_to_7_3_and_back_keeps_every_byte(chain: GuestResult) -> None:
    chain.check()
    share = chain.share
    assert chain.boots == 3
    releases = [(share / f"uname-{n}").read_text().split()[0] for n in (1, 2, 3)]
    assert releases == ["7.2.13", "7.3.4", "7.2.13"]
    assert [liveupdate_number(chain.stage(n).dmesg) for n in (1, 2, 3)] == [None, 1, 2]
    verified(share, "vm-a")  # 7.2.13 → 7.3.4
    verified(share, "vm-b")  # 7.3.4 → 7.2.13
    history = load(share, "history.json")["history"]
    assert [h["outcome"] for h in history] == ["refused", "completed", "completed"]
    first, second = (u["request"]["handover_abi"] for u in history[1:])
    # each update's own preflight, with the strings read from both images and debugfs
    assert first["status"] == "pass" and first["message"] == PASSING.format("7.2.13 → 7.3.4")
    assert second["status"] == "pass" and second["message"] == PASSING.format("7.3.4 → 7.2.13")
    # A cold 7.2.13 shows its KHO tree in debugfs; a 7.3.4 booted by a live update has none,
    # so its KHO string comes from its image (verified to be the running kernel).
    assert first["running"]["sources"]["kho"] == "debugfs kho/out/fdt"
    assert second["running"]["sources"]["kho"].startswith("the running kernel's image (debugfs")
    assert second["running"]["sources"]["luo"] == "debugfs kho/out/sub_fdts/LUO"
    for seen, pair in ((first, ("7.2.13", "7.3.4")), (second, ("7.3.4", "7.2.13"))):
        assert (seen["running"]["release"], seen["next"]["release"]) == pair
        assert seen["running"]["handlers"] == seen["next"]["handlers"] == {"memfd": "memfd-v2"}
        assert seen["override"] is False


def test_abi_v6_is_refused_and_never_kexeced(chain: GuestResult) -> None:
    share = chain.share
    assert chain.stage(1).kexeced and chain.boots >= 2, chain.report()
    assert (share / "preflight-v6.rc").read_text().strip() == "3"
    refused = abi_check(load(share, "preflight-v6.json"))
    assert refused["status"] == "fail"
    assert "LUO ABI 'luo-v5' (running 7.2.13 #1) vs 'luo-v6' (next 7.3.4 #2)" in refused["message"]
    assert "panic" in refused["message"]
    assert (share / "start-v6.rc").read_text().strip() == "3"
    start = (share / "start-v6.txt").read_text()
    assert "[preflight-failed]" in start and "luo-v6" in start
    assert (share / "vm-a-after-v6").read_text().strip() == "alive"
    after = load(share, "after-v6.json")
    assert [v["state"] for v in after["vms"]] == ["preserved"]
    [record] = after["history"]
    assert record["outcome"] == "refused" and "handover-abi" in record["reason"]
    assert record["request"]["handover_abi"]["next"]["luo"] == "luo-v6"
    assert record["request"]["handover_abi"]["running"]["luo"] == "luo-v5"
    run_log = (share / "vm-a-run.log").read_text()
    assert run_log.count('"event": "frozen"') == 1  # once: the update into 7.3.4
    assert '"event": "resumed"' not in run_log  # never frozen and resumed by an abort
    # the next boot is 7.3.4 (where vm-a came back intact), never the abi-v6 kernel
    assert (share / "uname-2").read_text().split()[0] == "7.3.4"
    assert "#2" not in (share / "uname-2").read_text()  # abi-v6 is 7.3.4 build #2
    verified(share, "vm-a")


def test_a_kexec_forced_past_luod_into_abi_v6_panics(
    kernels: dict[str, Path], vm_python: Path, tmp_path: Path
) -> None:
    script = stage("forced-1.sh", vm_python, ABI_V6_KERNEL=kernels[V6])
    result = run_guest([script], kernel=kernels[K72], timeout=240, workdir=tmp_path)
    console = result.console
    assert not result.timed_out, result.report()
    assert "preserved 1 MiB in session 'forced'" in result.stage(1).log, result.report()
    assert "luo: LUO state is incompatible with 'luo-v6'" in console, result.report()
    assert "Kernel panic - not syncing: The incoming tree failed to initialize properly" in console
    assert result.boots == 1  # the abi-v6 kernel never reached userspace


def test_the_chain_is_qualified_every_canary_checked_on_the_real_kernels(
    chain: GuestResult,
) -> None:
    share = chain.share
    chain.check()
    assert (share / "qualify-novms.rc").read_text().strip() == "1"
    assert load(share, "qualify-novms.json")["code"] == "vms-preserved"
    record = load(share, "qualification.json")
    assert record["outcome"] == "passed", (share / "qualification.txt").read_text()
    assert [(k["release"], k["luo"]) for k in record["chain"]] == [
        ("7.2.13", "luo-v5"),
        ("7.3.4", "luo-v5"),
        ("7.2.13", "luo-v5"),
    ]
    first, second = record["steps"]
    assert (first["from_release"], first["to_release"]) == ("7.2.13", "7.3.4")
    assert (second["from_release"], second["to_release"]) == ("7.3.4", "7.2.13")
    assert (first["liveupdate_number"], second["liveupdate_number"]) == (1, 2)
    for step in (first, second):
        checks = {c["name"]: c for c in step["checks"]}
        assert all(c["result"] == "pass" for c in checks.values()), step
        assert len(checks) > 150  # 7 mixed files x 3-4, 70 many-files x 3, 5 sessions, kernel
        seals = next(c for n, c in checks.items() if n.endswith("/noexec: seals"))
        assert seals["actual"] == "0x3e"  # F_SEAL_EXEC came back with the write seals
        assert any(n.endswith("/sparse: holes read as zeros") for n in checks)
        assert any(n.endswith("/large: sha256") for n in checks)
        assert step["timings"]["kexec_seconds"] > 0 and step["timings"]["verify_seconds"] > 0
        assert checks["update: outcome"]["actual"] == "completed"
    # the VMs that came along (--with-vms), and the QEMU canary: each reclaimed and done in
    # the next kernel
    canary = f"vm luodq-{record['id']}: reclaimed and done"
    assert {n for n in (c["name"] for c in first["checks"]) if n.startswith("vm ")} == {
        "vm vm-a: reclaimed and done",
        canary,
    }
    assert {n for n in (c["name"] for c in second["checks"]) if n.startswith("vm ")} == {
        "vm vm-b: reclaimed and done",
        canary,
    }
    qemu_canary_went_on(first, second)
    assert load(share, "vms-after-qualification.json") == []  # the canary VM stopped and dropped
    junit = (share / "qualification.xml").read_text()
    assert 'name="7.2.13 -&gt; 7.3.4"' in junit and 'failures="0"' in junit
    assert "<failure" not in junit


def qemu_canary_went_on(*steps: dict[str, Any]) -> None:
    """``--qemu-canary`` (issue 14 §1): a real QEMU guest (the boot-sector canary, nested TCG,
    under luod-qemu) crossed each real kexec, read over QMP after each: its RAM pattern and
    boot stamp as before (never reset), its counter on from before the kexec and rising."""
    shas = set()
    for step in steps:
        checks = {c["name"]: c for c in step["checks"] if c["name"].startswith("qemu canary")}
        assert {
            "qemu canary: restored", "qemu canary: boot stamp (never reset)",
            "qemu canary: RAM pattern sha256", "qemu canary: counter went on from before the kexec",
            "qemu canary: counter rises after the kexec", "qemu canary: status",
        } <= set(checks), sorted(checks)  # fmt: skip
        assert all(c["result"] == "pass" for c in checks.values()), checks
        went_on = checks["qemu canary: counter went on from before the kexec"]
        assert int(went_on["actual"]) >= int(went_on["expected"].removeprefix(">= ")) > 0
        shas.add(checks["qemu canary: RAM pattern sha256"]["actual"])
        assert step["timings"]["qemu_restore_seconds"] > 0
        print(json.dumps({"qemu canary": step["index"], **step["timings"]}))  # what it costs
    assert len(shas) == 1  # one boot of the guest: the same pattern after both kexecs
