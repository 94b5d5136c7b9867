"""Simulator behaviours that the shared contract cannot exercise on the real kernel."""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path

import pytest

from luod.kernel import Backend, LuoError, memfd
from luod.kernel.sim import SIM_RELEASE, SimKernel, SimulatedKexec, SimulatedPanic, sim_backend
from tests import bzimages
from tests.contract.harness import FAKE_BZIMAGE, sim_kernel


def kexec(backend: Backend, tmp_path: Path, cmdline: str = "liveupdate=on") -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    backend.load_kernel(image, cmdline=cmdline)
    with pytest.raises(SimulatedKexec):
        backend.reboot_kexec()


def test_eexist_at_a_51_session_boundary_poisons_the_next_boot(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    backend = sim_backend(state)
    sessions = [backend.device.create_session(f"s{i}") for i in range(51)]
    with pytest.raises(LuoError):
        backend.device.create_session("s0")
    assert sim_kernel(backend).poisoned
    kexec(backend, tmp_path)
    with pytest.raises(SimulatedPanic):
        SimKernel(state)
    for s in sessions:
        s.close()


def test_a_create_and_close_after_the_eexist_restores_the_chain(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    backend = sim_backend(state)
    sessions = [backend.device.create_session(f"s{i}") for i in range(51)]
    with pytest.raises(LuoError):
        backend.device.create_session("s0")
    backend.device.create_session("guard").close()
    kexec(backend, tmp_path)
    after = sim_backend(state)
    assert after.device.retrieve_session("s50").name == "s50"
    for s in sessions:
        s.close()


def test_eexist_off_the_boundary_does_not_poison(tmp_path: Path) -> None:
    backend = sim_backend(tmp_path / "sim")
    sessions = [backend.device.create_session(f"s{i}") for i in range(50)]
    with pytest.raises(LuoError):
        backend.device.create_session("s0")
    assert not sim_kernel(backend).poisoned
    for s in sessions:
        s.close()


def test_retrieve_failure_is_sticky_and_loses_the_data(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    backend = sim_backend(state)
    session = backend.device.create_session("vm")
    with memfd.create("ram", 4096) as fd:
        session.preserve(fd, 1)
    kexec(backend, tmp_path)
    after = sim_backend(state)
    sim_kernel(after).fail_next_retrieve("vm", 1)
    incoming = after.device.retrieve_session("vm")
    for _ in range(2):
        with pytest.raises(LuoError) as info:
            incoming.retrieve(1)
        assert info.value.errno == errno.ENOMEM
    incoming.close()
    session.close()


def test_next_kernel_without_liveupdate_has_no_device(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    backend = sim_backend(state)
    session = backend.device.create_session("vm")
    kexec(backend, tmp_path, cmdline="console=ttyS0")
    after = sim_backend(state)
    assert not after.info().device_present
    with pytest.raises(LuoError) as info:
        after.device.retrieve_session("vm")
    assert info.value.errno == errno.ENOENT and "liveupdate=on" in info.value.hint
    session.close()


def test_unknown_handler_in_the_handover_makes_every_open_eio(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    backend = sim_backend(state)
    session = backend.device.create_session("vm")
    with memfd.create("ram", 4096) as fd:
        session.preserve(fd, 1)
    kexec(backend, tmp_path)
    index = state / "handover" / "handover.json"
    index.write_text(index.read_text().replace("memfd-v2", "vfiofd-v1"))
    after = sim_backend(state)
    for _ in range(2):
        with pytest.raises(LuoError) as info:
            after.device.retrieve_session("vm")
        assert info.value.errno == errno.EIO
    session.close()


def test_calls_after_the_simulated_kexec_refuse(tmp_path: Path) -> None:
    backend = sim_backend(tmp_path / "sim")
    session = backend.device.create_session("vm")
    kexec(backend, tmp_path)
    with pytest.raises(SimulatedKexec):
        session.name  # noqa: B018
    session.close()


def bzimage_of(release: str) -> bytes:
    """A synthetic bzImage whose header names its version, as a real one does (boot protocol:
    kernel_version at 0x20E points to the string, relative to 0x200)."""
    return bzimages.bzimage(replace(bzimages.B_7_3, release=release))


HEADER_ONLY = b"\0" * 0x202 + b"HdrS" + b"\0" * 0x1000  # no version string, no payload


def test_the_next_boot_runs_the_release_its_image_names(tmp_path: Path) -> None:
    """As `uname -r` after a real kexec: a fleet rollout checks it to know a host is done."""
    state = tmp_path / "sim"
    before = sim_backend(state)
    assert before.info().release == SIM_RELEASE
    image = tmp_path / "bzImage-7.3.4"
    image.write_bytes(bzimage_of("7.3.4-fleet"))
    before.load_kernel(image, cmdline="liveupdate=on")
    with pytest.raises(SimulatedKexec):
        before.reboot_kexec()
    after = sim_backend(state).info()
    assert (after.release, after.previous_release) == ("7.3.4-fleet", SIM_RELEASE)
    stub = tmp_path / "stub"
    stub.write_bytes(HEADER_ONLY)
    backend = sim_backend(state)
    backend.load_kernel(stub, cmdline="liveupdate=on")
    with pytest.raises(SimulatedKexec):
        backend.reboot_kexec()  # a stub image without a version: the default
    assert sim_backend(state).info().release == SIM_RELEASE
