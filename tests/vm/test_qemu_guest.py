"""Issue 12 on the real kernel: real QEMU guests (L2, nested TCG inside the LUO test VM) run
under luod-qemu while the host takes a live update (a real kexec with luod), and go on:
- l2, the boot-sector guest: never reset (its boot stamp unchanged, its counter on from the
  value it had at QMP ``stop``), the RAM pattern it never touches byte-identical, and still
  counting afterwards;
- lx, a small Linux guest: its uptime and the counter its /init keeps in memory go on from
  where they were at ``stop`` (a reset would start both again from zero)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.vm.qemu import GuestResult, run_guest
from tests.vm.test_datapath import _events, stage


def load(share: Path, name: str) -> Any:
    return json.loads((share / name).read_text())


def events(share: Path, name: str) -> dict[str, dict[str, Any]]:
    lines = (share / name).read_text(errors="replace").splitlines()
    found = [json.loads(line) for line in lines if line.startswith("{")]
    return {event["event"]: event for event in found}


@pytest.fixture(scope="module")
def run(luo_kernel: Path, vm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    stages = [stage(f"qemu-{n}.sh", vm_python, luo_kernel) for n in (1, 2)]
    workdir = tmp_path_factory.mktemp("qemu-guest")
    return run_guest(stages, kernel=luo_kernel, timeout=600, workdir=workdir)


@pytest.mark.timeout(900)  # the guest's own limit is 600 s; a busy shared machine is slow
def test_qemu_guest_goes_on_across_a_real_kexec(run: GuestResult) -> None:
    share = run.share
    run.check()
    assert run.boots == 2
    before, running = load(share, "l2-before.json"), load(share, "l2-running.json")
    at_restore = load(share, "l2-at-restore.json")  # the RAM as LUO carried it, before QEMU
    after_1, after_2 = load(share, "l2-after-1.json"), load(share, "l2-after-2.json")
    assert before["magic"] == "LUOD" and running["counter"] > before["counter"]

    # Never reset: the boot code ran once (same stamp), the counter went on from its value at
    # stop (which is what the RAM held when QEMU got it back) and keeps going.
    assert at_restore["stamp"] == before["stamp"] == after_2["stamp"]
    assert at_restore["counter"] >= running["counter"]
    assert after_2["counter"] > after_1["counter"] >= at_restore["counter"]
    assert before["pattern_sha256"] == at_restore["pattern_sha256"] == after_2["pattern_sha256"]

    listed = {vm["id"]: vm for vm in load(share, "list-before.json")}
    assert set(listed) == {"l2", "lx"}
    for vm in listed.values():
        assert vm["state"] == "preserved"
        assert {f["name"] for f in vm["files"]} == {"ram0", "spec"}
    frozen = events(share, "l2-run-1.log")["frozen"]
    restored = events(share, "l2-run-2.log")["restored"]
    assert restored["state_bytes"] == frozen["state_bytes"] > 0
    # started before luod after the kexec (qemu-2.sh): it waited for luod's socket, then restored
    waited = events(share, "l2-run-2.log")["waiting-for-luod"]
    assert waited["socket"] == "/run/luod/liveupdate.sock" and waited["at"] < restored["at"]
    assert restored["pause"] > restored["reboot"] > 0
    again = load(share, "list-after.json")  # preserved again for the next update
    assert {vm["id"]: vm["state"] for vm in again} == {"l2": "preserved", "lx": "preserved"}
    assert load(share, "list-stopped.json") == []  # stopping the VM released it
    print(json.dumps({"frozen": frozen, "restored": restored}, indent=1))


@pytest.mark.timeout(900)
def test_restores_beyond_the_start_slots_wait_for_a_running_vm(run: GuestResult) -> None:
    """Boot 2 has one start slot (qemu-2.sh, luod.vmm.start_gate): l2's luod-qemu held it
    while it waited for luod and restored its VM; lx's took it only once l2's guest ran again
    (QMP ``cont``), with luod serving by then, and restored its VM too."""
    run.check()
    l2, lx = events(run.share, "l2-run-2.log"), events(run.share, "lx-run-2.log")
    assert l2["start-slot"]["gated"] and l2["start-slot"]["slot"] == 0, l2["start-slot"]
    assert lx["start-slot"]["gated"] and lx["start-slot"]["waited"] > 0, lx["start-slot"]
    restored = l2["restored"]
    l2_cont = restored["process_start"] + restored["after_kexec"]["cont"]  # the wall clock
    assert lx["start-slot"]["at"] >= l2_cont, (lx["start-slot"], restored)
    assert "waiting-for-luod" not in lx and lx["restored"]["at"] > lx["start-slot"]["at"]


@pytest.mark.timeout(900)
def test_linux_guest_goes_on_across_a_real_kexec(run: GuestResult) -> None:
    share = run.share
    run.check()
    before, running = load(share, "lx-before.json"), load(share, "lx-running.json")
    at_restore = load(share, "lx-at-restore.json")  # the RAM as LUO carried it, before QEMU
    after_1, after_2 = load(share, "lx-after-1.json"), load(share, "lx-after-2.json")
    assert before["magic"] == at_restore["magic"] == after_2["magic"] == "LUOD-L2-LINUX:-)"
    assert before["offset"] == at_restore["offset"] == after_2["offset"]  # the same process
    assert running["counter"] > before["counter"] > 0
    # The value in its memory went on from where it was at stop, and keeps going.
    assert after_2["counter"] > after_1["counter"] >= at_restore["counter"] >= running["counter"]
    # Its uptime too: a reset would boot again from zero.
    assert after_2["uptime"] > after_1["uptime"] >= at_restore["uptime"] >= running["uptime"]
    frozen = events(share, "lx-run-1.log")["frozen"]
    restored = events(share, "lx-run-2.log")["restored"]
    assert restored["state_bytes"] == frozen["state_bytes"] > 0
    # Its serial console, kept on the share for a boot that stalls: it booted once, and the
    # restored QEMU (the same chardev, appending) went on without booting again.
    console = (share / "lx-console.log").read_text(errors="replace")
    assert console.count("Linux version") == 1 and "Run /init as init process" in console
    print(json.dumps({"before": running, "at_restore": at_restore, "after": after_2}, indent=1))


def test_each_vmm_cgroup_gets_its_vm_ram_through_a_fork_then_the_kept_helper(
    run: GuestResult,
) -> None:
    """Each luod-qemu runs in a cgroup of its own, as a ``luod-qemu@`` unit does (qemu-2.sh).
    l2's RECLAIM forked luod into vm-l2 and started the kept retrieve helper
    (luod.kernel.retriever); lx's, seconds later, went through that helper into vm-lx. Both
    VMs' 64 MiB of RAM are charged to their own cgroup as shared memory (docs/kernel.md §6.4:
    the retrieving task's memcg; QEMU maps that RAM, it does not allocate it), and neither
    cgroup holds anything of luod's once its VM stopped: both were removed. Once the update
    ended the helper retired, back home in luod's cgroup (the guest's root): an idle host does
    not keep it."""
    share = run.share
    run.check()
    said = [e for e in _events(share / "luod-2.log") if e["event"].startswith("retrie")]
    served = {e["cgroup"]: e["via"] for e in said if e["event"] == "retrieved-in-cgroup"}
    assert served == {"/vm-l2": "fork", "/vm-lx": "helper"}, served
    retired = said[-1]
    assert retired["event"] == "retriever-retired" and retired["cgroup"] == "/", said
    assert retired["why"].endswith("ended (completed)"), retired
    for vm in ("l2", "lx"):
        stat = dict(line.split() for line in (share / f"memory-stat-{vm}").read_text().splitlines())
        assert int(stat["shmem"]) >= 64 << 20, f"vm-{vm}: {stat['shmem']} bytes of shmem"
        assert (share / f"procs-{vm}-after").read_text().split() == [], vm
        assert (share / f"rmdir-{vm}").read_text().strip() == "removed", vm


def test_qemu_gets_its_tap_back_and_runs_on_it_after_the_kexec(run: GuestResult) -> None:
    """Issue 15: the tap of ``-netdev tap,ifname=l2-tap0`` (declared by luod-qemu) and its
    bridge are rebuilt before the VM's RECLAIM answers, and the restored QEMU has it open."""
    share = run.share
    run.check()
    vms = {vm["id"]: vm for vm in load(share, "list-before.json")}
    assert vms["lx"]["nics"] == []
    vm = vms["l2"]
    assert vm["nics"] == [{"name": "l2-tap0", "bridge": None}]
    nics = events(share, "l2-run-2.log")["reclaimed"]["nics"]
    assert nics["ready"] and nics["exact"], nics
    assert {d["name"]: d["status"] for d in nics["devices"]} == {
        "br-l2": "rebuilt",
        "l2-tap0": "rebuilt",
    }
    (before,), (after,) = load(share, "l2-tap-before.json"), load(share, "l2-tap-after.json")
    for key in ("address", "mtu", "master", "txqlen"):
        assert after.get(key) == before.get(key), key
    tun = ("type", "pi", "vnet_hdr", "multi_queue", "persist")
    data_before, data_after = before["linkinfo"]["info_data"], after["linkinfo"]["info_data"]
    assert {k: data_after.get(k) for k in tun} == {k: data_before.get(k) for k in tun}
    assert after["master"] == "br-l2" and data_after["vnet_hdr"]
    # carrier 1: a tap has carrier while a process (QEMU) has a queue of it open
    assert (share / "l2-carrier-1").read_text().strip() == "1"
    assert (share / "l2-carrier-2").read_text().strip() == "1"
