"""The simulator boots as the kernel of the image it kexec'd into, and does with a handover it
cannot take what that kernel would (luod.kernel._simabi; docs/kernel.md §8.2, §8.3)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from luod.core import abi, compat
from luod.kernel import Backend, LuoError, memfd
from luod.kernel.images import Declared
from luod.kernel.sim import SimulatedKexec, SimulatedPanic, sim_backend
from tests.bzimages import B_7_3, B_ABI_V6, bzimage
from tests.contract.harness import sim_kernel


def boot(state: Path) -> Backend:
    return sim_backend(state, read_abi=compat.ImageCache().declared)


def kexec_with_a_memfd(state: Path, image: Path, declared: Declared) -> None:
    """A memfd preserved in session "vm", then the simulated kexec into ``declared``."""
    image.write_bytes(bzimage(declared))
    backend = boot(state)
    session = backend.device.create_session("vm")
    ram = memfd.create("ram")
    os.pwrite(ram.fileno(), b"guest", 0)
    session.preserve(ram, 1)
    backend.load_kernel(image, cmdline=backend.info().cmdline)
    with pytest.raises(SimulatedKexec):
        backend.reboot_kexec()
    ram.close()


def test_a_cold_boot_shows_kho_and_luo_in_debugfs(tmp_path: Path) -> None:
    backend = boot(tmp_path / "sim")
    blobs = backend.handover_blobs()
    assert blobs.fdt is not None and abi.fdt_compatible(blobs.fdt) == "kho-v4"
    assert blobs.luo is not None and abi.luo_compatible(blobs.luo) == "luo-v5"
    image = backend.running_image()
    assert image is not None and image.name == "vmlinuz-7.2.13-luodsim"
    assert abi.image_facts(image.read_bytes()).declared.handlers == {"memfd": "memfd-v2"}


def test_kexec_into_a_compatible_kernel_becomes_that_kernel(tmp_path: Path) -> None:
    image = tmp_path / "b"
    kexec_with_a_memfd(tmp_path / "sim", image, B_7_3)
    after = boot(tmp_path / "sim")
    info = after.info()
    assert (info.release, info.version, info.liveupdate_number) == ("7.3.4", B_7_3.version, 1)
    assert after.running_image() == image
    blobs = after.handover_blobs()
    assert blobs.fdt is None and "fdt" in blobs.missing  # only on a cold boot (docs/kernel.md §8.2)
    session = after.device.retrieve_session("vm")
    with session.retrieve(1) as ram:
        assert os.pread(ram.fileno(), 5, 0) == b"guest"
    session.close()


def test_kexec_into_another_luo_abi_panics_and_loses_everything(tmp_path: Path) -> None:
    kexec_with_a_memfd(tmp_path / "sim", tmp_path / "b", B_ABI_V6)
    with pytest.raises(SimulatedPanic) as panic:
        boot(tmp_path / "sim")
    assert "LUO state is incompatible with 'luo-v6'" in str(panic.value)
    assert "Kernel panic - not syncing" in str(panic.value)
    after = boot(tmp_path / "sim")  # panic=-1: the machine comes back cold
    assert after.info().liveupdate_number == 0
    with pytest.raises(LuoError) as gone:
        after.device.retrieve_session("vm")
    assert gone.value.errno == errno.ENOENT


def test_another_file_handler_makes_the_device_fail_with_eio(tmp_path: Path) -> None:
    other = Declared("7.3.4", "#3", "kho-v4", "luo-v5", {"memfd": "memfd-v3"})
    kexec_with_a_memfd(tmp_path / "sim", tmp_path / "b", other)
    after = boot(tmp_path / "sim")
    assert after.info().liveupdate_number == 1  # it booted: LUO itself was fine
    for _ in range(2):  # sticky for the whole boot (docs/kernel.md §3.2)
        with pytest.raises(LuoError) as failed:
            after.device.retrieve_session("vm")
        assert failed.value.errno == errno.EIO


def test_another_kho_abi_drops_the_handover(tmp_path: Path) -> None:
    other = Declared("7.3.4", "#4", "kho-v5", "luo-v5", {"memfd": "memfd-v2"})
    kexec_with_a_memfd(tmp_path / "sim", tmp_path / "b", other)
    after = boot(tmp_path / "sim")
    assert after.info().liveupdate_number == 0
    with pytest.raises(LuoError) as gone:
        after.device.retrieve_session("vm")
    assert gone.value.errno == errno.ENOENT


def test_without_a_reader_an_image_boots_as_the_native_kernel(tmp_path: Path) -> None:
    kexec_with_a_memfd(tmp_path / "sim", tmp_path / "b", B_ABI_V6)
    after = sim_backend(tmp_path / "sim")  # the contract tests' simulator: no reader given
    assert after.info().release == "7.3.4"  # from the image's header; the ABI stays native
    assert sim_kernel(after).kernel.luo == "luo-v5"
    after.device.retrieve_session("vm").close()
