"""luod-qemu with a real QEMU (the host's, TCG) against luod on the simulator: a running guest
goes on across the simulated kexec, never reset, its untouched RAM byte-identical; a QEMU that
cannot start after the reboot loses nothing and the same command succeeds afterwards."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from luod.errors import LuodError
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.integration.conftest import Daemon, start_daemon
from tests.integration.qemu_vm import LuodQemu, counting


def update(daemon: Daemon, image: Path) -> None:
    """An update that kexecs (the simulated luod exits after its "reboot")."""
    with Client(daemon.socket) as client, contextlib.suppress(LuodError, ConnectionError):
        client.update(image, wait=True, deadlines={"freezing": 20})
    assert daemon.process.wait(timeout=20) == 0, daemon.log.read_text()


def vm_state(daemon: Daemon, vm: str) -> str:
    with Client(daemon.socket) as client:
        return str(client.list(vm)[0]["state"])


def test_guest_goes_on_across_the_kexec_and_a_failed_restart_loses_nothing(
    tmp_path: Path,
) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    daemon = start_daemon(tmp_path / "luod")
    vm = LuodQemu(tmp_path, daemon.socket).start()
    try:
        preserved = vm.wait_event("preserved")
        assert preserved["ram_bytes"] == 64 << 20
        assert vm_state(daemon, "vm1") == "preserved"
        ram = vm.ram()
        counting(ram, above=3)  # the timer ticks: it runs
        ram.write_pattern()
        before = ram.probe()
        update(daemon, image)
        frozen = vm.wait_event("frozen")
        at_stop = vm.ram().probe()  # QEMU is paused (the simulator's kexec leaves it alive)
        time.sleep(0.3)
        assert vm.ram().probe()["counter"] == at_stop["counter"], "the guest ran after READY"
        assert at_stop["counter"] >= before["counter"] and at_stop["stamp"] == before["stamp"]
        assert 100_000 < frozen["state_bytes"] < 4 << 20  # the device state, not the 64 MiB
        vm.kill()  # the kexec ends every process

        daemon = start_daemon(tmp_path / "luod")
        vm.start("restore", "--qemu", "/bin/false")
        assert vm.wait_exit() == 1
        failed = vm.wait_event("restore-failed")
        assert failed["code"] == "qemu-start-failed", failed
        assert vm_state(daemon, "vm1") in ("incoming", "reclaimed")  # no DONE: still there

        vm.start("run")  # the same command as the first start: it restores
        restored = vm.wait_event("restored")
        after = vm.ram().probe()
        assert after["stamp"] == at_stop["stamp"], "the guest was reset (its boot code ran)"
        assert after["magic"] == "LUOD"
        assert after["pattern_sha256"] == before["pattern_sha256"]
        assert after["counter"] >= at_stop["counter"]
        counting(vm.ram(), above=after["counter"])  # it keeps running
        assert restored["state_bytes"] == frozen["state_bytes"]
        steps = restored["after_kexec"]
        assert steps["reclaimed"] <= steps["qemu_started"] <= steps["state_loaded"]
        assert steps["state_loaded"] <= steps["cont"] <= steps["done"]
        assert restored["pause"] > restored["reboot"] > 0
        vm.wait_event("preserved")  # protected again for the next update
        assert vm_state(daemon, "vm1") == "preserved"
    finally:
        vm.kill()
        daemon.stop()


def test_supervisor_rides_out_luod_restarts_and_restores_in_place(tmp_path: Path) -> None:
    """luod killed under a running VM: luod-qemu reconnects, finds the VM lost (the simulator's
    luod keeps custody in memory only) and hands its RAM over again. After the simulated
    kexec (which, unlike a real one, leaves luod-qemu alive) the restarted luod holds the VM
    incoming: the same luod-qemu replaces its paused QEMU by a restored one."""
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    daemon = start_daemon(tmp_path / "luod")
    vm = LuodQemu(tmp_path, daemon.socket).start()
    try:
        vm.wait_event("preserved")
        first_qemu = vm.status()["qemu_pid"]
        daemon.process.kill()
        daemon.process.wait()
        daemon = start_daemon(tmp_path / "luod")
        assert vm.wait_event("luod-back")["state"] == "lost"
        deadline = time.monotonic() + 30
        while len([e for e in vm.events() if e["event"] == "preserved"]) < 2:
            assert time.monotonic() < deadline, vm.log.read_text()
            time.sleep(0.05)
        assert vm_state(daemon, "vm1") == "preserved"  # handed over again
        ram = vm.ram()
        counting(ram, above=ram.probe()["counter"])
        before = ram.probe()
        update(daemon, image)
        vm.wait_event("frozen")
        daemon = start_daemon(tmp_path / "luod")
        restored = vm.wait_event("restored")
        status = vm.status()
        assert status["qemu_pid"] != first_qemu and status["phase"] == "running"
        after = vm.ram().probe()
        assert after["stamp"] == before["stamp"] and after["counter"] >= before["counter"]
        counting(vm.ram(), above=after["counter"])
        assert restored["state_bytes"] > 0
    finally:
        vm.kill()
        daemon.stop()


def test_luod_qemu_started_before_luod_waits_for_its_socket(tmp_path: Path) -> None:
    """An init that starts luod and its VMMs at once (bare init, docs/operations.md §2.3): the
    VMM waits for luod's socket (--wait-for-luod), says so once, then hands its VM over."""
    socket = tmp_path / "luod" / "run" / "liveupdate.sock"  # where start_daemon's luod listens
    vm = LuodQemu(tmp_path, socket).start()
    daemon = None
    try:
        waiting = vm.wait_event("waiting-for-luod")
        assert waiting["socket"] == str(socket), waiting
        time.sleep(0.5)  # luod starts a little later
        daemon = start_daemon(tmp_path / "luod")
        assert vm.wait_event("preserved")["ram_bytes"] == 64 << 20
        assert vm_state(daemon, "vm1") == "preserved"
        assert [e["event"] for e in vm.events()].count("waiting-for-luod") == 1
    finally:
        vm.kill()
        if daemon is not None:
            daemon.stop()


def test_luod_qemu_without_luod_fails_clearly_after_its_wait(tmp_path: Path) -> None:
    vm = LuodQemu(tmp_path, tmp_path / "nobody.sock").start("run", "--wait-for-luod", "0.5")
    assert vm.wait_exit() == 1
    text = vm.log.read_text()
    assert "luod-unavailable: no luod answers at" in text and "after 0.5 s" in text, text
    assert "hint: start luod" in text and "Traceback" not in text, text


GATED = "luod.qemu.start"  # luod-qemu as installed: its entry point takes a start slot


def gate(tmp_path: Path, slots: int = 1, wait: float = 60.0) -> dict[str, str]:
    return {
        "LUOD_VMM_START_DIR": str(tmp_path / "gate"),
        "LUOD_VMM_START_SLOTS": str(slots),
        "LUOD_VMM_START_WAIT": str(wait),
    }


def test_vmms_beyond_the_start_slots_start_once_a_vm_runs(tmp_path: Path) -> None:
    """Two luod-qemu on a host with one start slot (luod.vmm.start_gate), started with luod as
    after a kexec: the first holds the slot while it waits for luod and boots its VM; the
    second starts once that VM runs (the slot is freed before luod-qemu hands the RAM over),
    and both VMs end up running and preserved."""
    socket = tmp_path / "luod" / "run" / "liveupdate.sock"  # where start_daemon's luod listens
    first = LuodQemu(tmp_path / "a", socket, "a", entry=GATED, env=gate(tmp_path)).start()
    bad_wait = {**gate(tmp_path), "LUOD_VMM_START_WAIT": "soon"}  # said, and its default used
    second = LuodQemu(tmp_path / "b", socket, "b", entry=GATED, env=bad_wait)
    daemon = None
    try:
        held = first.wait_event("start-slot")
        assert held["gated"] and held["slot"] == 0 and "ignored" not in held, held
        assert held["directory"] == str(tmp_path / "gate"), held  # LUOD_VMM_START_DIR
        first.wait_event("waiting-for-luod")  # holding the one slot
        second.start()
        time.sleep(0.5)
        assert second.events() == []  # waiting for the slot
        daemon = start_daemon(tmp_path / "luod")
        slot = second.wait_event("start-slot")
        assert slot["gated"] and slot["slot"] == 0 and slot["waited"] > 0.5, slot
        assert slot["ignored"] == [
            "LUOD_VMM_START_WAIT='soon' is not a number of seconds 0 or more: 60 used"
        ]
        started = first.wait_event("started")  # QEMU runs the guest: the slot was freed then
        assert slot["at"] >= started["at"], (slot, started)
        for vm in (first, second):
            assert vm.wait_event("preserved")["ram_bytes"] == 64 << 20
            assert vm_state(daemon, vm.vm) == "preserved"
            counting(vm.ram())
    finally:
        for vm in (first, second):
            vm.kill()
        if daemon is not None:
            daemon.stop()


def test_a_start_slot_comes_free_when_its_vmm_dies_or_after_the_wait(tmp_path: Path) -> None:
    """The gate never keeps a VM from starting: a holder killed before its VM ran frees the
    slot, and a VMM that finds none free within LUOD_VMM_START_WAIT starts anyway."""
    socket = tmp_path / "luod" / "run" / "liveupdate.sock"
    holder = LuodQemu(tmp_path / "holder", socket, "holder", entry=GATED, env=gate(tmp_path))
    holder.start()  # no luod yet: it waits for the socket, holding the one slot
    daemon = None
    try:
        assert holder.wait_event("start-slot")["gated"]
        holder.wait_event("waiting-for-luod")
        impatient = LuodQemu(tmp_path / "impatient", socket, "impatient", entry=GATED,
                             env=gate(tmp_path, wait=0.5))  # fmt: skip
        patient = LuodQemu(tmp_path / "patient", socket, "patient", entry=GATED,
                           env=gate(tmp_path))  # fmt: skip
        impatient.start("run", "--wait-for-luod", "0.5")
        patient.start()
        slot = impatient.wait_event("start-slot")
        assert not slot["gated"] and "no slot free after 0.5 s: started anyway" in slot["note"]
        assert impatient.wait_exit() == 1  # then no luod: as without a gate
        time.sleep(0.5)
        assert patient.events() == []  # still waiting for the slot
        holder.kill()
        slot = patient.wait_event("start-slot")
        assert slot["gated"] and slot["waited"] > 1.0, slot
        daemon = start_daemon(tmp_path / "luod")
        assert patient.wait_event("preserved")["ram_bytes"] == 64 << 20
        patient.kill()
    finally:
        holder.kill()
        if daemon is not None:
            daemon.stop()
