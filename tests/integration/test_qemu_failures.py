"""luod-qemu when the freeze goes wrong, with a real QEMU against luod on the simulator: each
failure answers FREEZE with a clear error (luod aborts the update), and nothing is lost: the
VM stays preserved in luod, and a guest whose QEMU lives goes on."""

from __future__ import annotations

import concurrent.futures
import os
import resource
import signal
from pathlib import Path
from typing import Any

import pytest

from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.integration.conftest import Daemon
from tests.integration.qemu_vm import LuodQemu, counting

STATE_LIMIT = 64 << 10  # far below the ~318 KB of device state a PC guest has


def aborted_update(daemon: Daemon, tmp_path: Path) -> dict[str, Any]:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    with Client(daemon.socket) as client:
        record: dict[str, Any] = client.update(image, wait=True, deadlines={"freezing": 20})
        update = record["update"]
        assert update["outcome"] == "aborted", update
        vm = client.list("vm1")[0]
    assert vm["state"] == "preserved", vm
    assert {f["name"] for f in vm["files"]} >= {"ram0", "spec"}  # the guest RAM is still held
    return dict(update)


@pytest.fixture
def vm(tmp_path: Path, daemon: Daemon) -> Any:
    running = LuodQemu(tmp_path, daemon.socket)
    yield running
    running.kill()


def test_qmp_timeout_refuses_freeze_and_the_guest_goes_on(
    vm: LuodQemu, daemon: Daemon, tmp_path: Path
) -> None:
    vm.start("run", "--qmp-timeout", "1")
    vm.wait_event("preserved")
    qemu = vm.status()["qemu_pid"]
    os.kill(qemu, signal.SIGSTOP)  # a hung QEMU: its monitor answers nothing
    try:
        update = aborted_update(daemon, tmp_path)
    finally:
        os.kill(qemu, signal.SIGCONT)
    assert "qmp-timeout" in update["reason"], update["reason"]
    failed = vm.wait_event("freeze-failed")
    assert failed["code"] == "qmp-timeout" and failed["qemu_alive"] is True
    ram = vm.ram()
    counting(ram, above=ram.probe()["counter"])  # the stop, then the conts, all went through
    assert vm.process is not None
    vm.process.send_signal(signal.SIGTERM)
    assert vm.wait_exit() == 0  # its QMP stream still in step: quit answered
    vm.wait_event("dropped")


def test_qemu_dying_during_the_freeze_refuses_and_keeps_the_ram(
    vm: LuodQemu, daemon: Daemon, tmp_path: Path
) -> None:
    vm.start("run", "--qmp-timeout", "20")
    vm.wait_event("preserved")
    qemu = vm.status()["qemu_pid"]
    os.kill(qemu, signal.SIGSTOP)  # held in its QMP stop, until it is killed
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(aborted_update, daemon, tmp_path)
        vm.wait_event("freezing")
        os.kill(qemu, signal.SIGKILL)
        update = pending.result(timeout=30)
    assert update["reason"].startswith("vm-refused"), update["reason"]
    assert "qmp-closed" in update["reason"], update["reason"]
    failed = vm.wait_event("freeze-failed")
    assert failed["qemu_alive"] is False and failed["code"] == "qmp-closed", failed
    assert vm.wait_exit() == 1


def test_failed_migration_refuses_freeze_and_the_guest_goes_on(
    vm: LuodQemu, daemon: Daemon, tmp_path: Path
) -> None:
    vm.start("run")
    vm.wait_event("preserved")
    assert vm.process is not None  # no room for the device state from now on: luod-qemu's
    limit = (STATE_LIMIT, STATE_LIMIT)  # copy fails (EFBIG), QEMU's stream breaks (EPIPE)
    resource.prlimit(vm.process.pid, resource.RLIMIT_FSIZE, limit)
    update = aborted_update(daemon, tmp_path)
    assert "migration-failed" in update["reason"], update["reason"]
    failed = vm.wait_event("freeze-failed")
    assert failed["code"] == "migration-failed" and failed["qemu_alive"] is True
    vm.wait_event("resumed")
    ram = vm.ram()
    counting(ram, above=ram.probe()["counter"])
