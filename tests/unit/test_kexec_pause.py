"""Nothing inside the VMs' pause that can come before it: the direct kexec does not read
/sys/kernel/kexec_loaded between the last READY and reboot(2) (1.6 ms of that pause under TCG,
bench/NOTES.md); the update driver checks before FREEZE, and reboot(2)'s own EINVAL, should the
kernel go in between, is still said as ``no-kernel-loaded``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from luod.core import handoff
from luod.daemon.update import UpdateRequest
from luod.errors import LuodError
from luod.kernel.sim import SimulatedKexec
from tests.contract.harness import FAKE_BZIMAGE
from tests.rest.harness import Luod
from tests.unit.test_core import World, preserve


def _loaded(world: World, tmp_path: Path) -> list[str]:
    """vm1 preserved, a next kernel loaded; returns the list of each later sysfs read."""
    preserve(world.registry, "vm1", ram0=b"guest")
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    handoff.load_next_kernel(world.backend, image, None, None)
    reads: list[str] = []
    loaded = world.backend.kernel_loaded

    def counted() -> bool:
        reads.append("kexec_loaded")
        return loaded()

    world.backend.kernel_loaded = counted  # type: ignore[method-assign]
    return reads


def test_the_direct_kexec_reads_no_sysfs_inside_the_pause(world: World, tmp_path: Path) -> None:
    reads = _loaded(world, tmp_path)
    with pytest.raises(SimulatedKexec):
        handoff.kexec_direct(world.registry, world.backend)
    assert reads == []


def test_a_kernel_gone_before_the_reboot_is_said_as_no_kernel_loaded_and_rolled_back(
    world: World, tmp_path: Path
) -> None:
    reads = _loaded(world, tmp_path)
    world.backend.unload_kernel()  # someone ran `kexec -u` during the freeze
    with pytest.raises(LuodError) as caught:
        handoff.kexec_direct(world.registry, world.backend)
    assert caught.value.code == "no-kernel-loaded"
    assert reads == ["kexec_loaded"]  # asked once the reboot had refused, to say why
    assert not world.registry.kexec_pending  # rolled back: changes are allowed again


def test_the_systemd_kexec_still_checks_first(world: World, tmp_path: Path) -> None:
    reads = _loaded(world, tmp_path)
    world.custody.kind = "systemd"  # type: ignore[misc]  # as the fd store
    asked: list[str] = []
    with pytest.raises(LuodError) as caught:
        world.backend.unload_kernel()
        handoff.kexec_systemd(world.registry, world.backend, lambda: asked.append("systemctl"))
    assert caught.value.code == "no-kernel-loaded" and asked == []  # systemd would load its own
    assert reads == ["kexec_loaded"]


def test_an_update_whose_kernel_went_before_the_freeze_aborts_without_freezing(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        vmm = await luod.handover_vm("vm1")
        backend = luod.daemon.backend
        load = backend.load_kernel

        def loaded_then_gone(*args: object) -> None:
            load(*args)  # type: ignore[arg-type]
            backend.unload_kernel()  # gone again before the freeze

        backend.load_kernel = loaded_then_gone  # type: ignore[method-assign,assignment]
        luod.driver.start(UpdateRequest(luod.kernel))
        record = await luod.driver.wait()
        assert record is not None and record.outcome == "aborted"
        assert "no-kernel-loaded" in record.reason
        assert not vmm.events("FREEZE")  # no VM paused for a kexec that could not come
        assert luod.registry.get("vm1").state.value == "preserved"

    luod = Luod(tmp_path / "luod")
    try:
        asyncio.run(scenario())
    finally:
        luod.close()


def test_the_direct_kexec_runs_on_the_loops_own_thread(tmp_path: Path) -> None:
    """No hop into a worker thread between the last READY and reboot(2): it cost 0.6-1.9 ms of
    every VM's pause in a TCG guest (bench/NOTES.md)."""

    async def scenario() -> None:
        vmm = await luod.handover_vm("vm1")
        backend = luod.daemon.backend
        reboot = backend.reboot_kexec
        threads: list[int] = []

        def watched() -> None:
            threads.append(threading.get_ident())
            reboot()

        backend.reboot_kexec = watched  # type: ignore[method-assign]
        await luod.kexec({"vm1": vmm})
        assert threads == [loop_thread]

    loop_thread = threading.get_ident()  # asyncio.run's loop runs on this thread
    luod = Luod(tmp_path / "luod")
    try:
        asyncio.run(scenario())
    finally:
        luod.close()
