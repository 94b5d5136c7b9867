"""Registry, reclaim, manifest and recovery over the simulator (pure logic, no sockets)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from luod.core import handoff, manifest, reclaim
from luod.core.access import AccessPolicy, Peer
from luod.core.model import FileSpec, Mode, VmState
from luod.core.recovery import RecoveryReport, recover
from luod.core.registry import Registry
from luod.custody.memory import MemoryCustody
from luod.errors import LuodError
from luod.kernel import Backend, OwnedFd, memfd
from luod.kernel.sim import SimulatedKexec, sim_backend
from tests.contract.harness import FAKE_BZIMAGE, sim_kernel

ROOT = Peer(0, 0, os.getpid())
OTHER = Peer(1000, 1000, os.getpid())
POLICY = AccessPolicy()


@dataclass
class World:
    """A registry with the backend and custody it was built with, as luod's Daemon builds it."""

    registry: Registry
    backend: Backend
    custody: MemoryCustody

    @classmethod
    def boot(cls, kernel: Path, state: Path, policy: AccessPolicy = POLICY) -> World:
        """One boot of the simulated kernel ``kernel``; nothing recovered yet."""
        backend, custody = sim_backend(kernel), MemoryCustody()
        return cls(Registry(backend, custody, state, policy), backend, custody)

    def recover(self) -> RecoveryReport:
        return recover(self.registry, self.backend, self.custody)

    def power_off(self) -> None:
        sim_kernel(self.backend).close()


def ram(data: bytes) -> OwnedFd:
    fd = memfd.create("ram", len(data))
    os.pwrite(fd.fileno(), data, 0)
    return fd


def preserve(registry: Registry, vm: str, **files: bytes) -> None:
    registry.register(ROOT, vm, Mode.HANDOVER)
    specs = [FileSpec(name) for name in files]
    registry.preserve(ROOT, vm, specs, [ram(data) for data in files.values()])


def kexec(world: World, tmp_path: Path) -> World:
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    handoff.load_next_kernel(world.backend, image, None, None)
    with pytest.raises(SimulatedKexec):
        handoff.kexec_direct(world.registry, world.backend)
    return World.boot(tmp_path / "kernel", world.registry.state_dir)


def test_tokens_count_from_one_in_preservation_order(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"a", ram1=b"b")
    assert [f.token for f in world.registry.vms["vm1"].files.values()] == [1, 2]


def test_another_uid_is_not_the_owner(tmp_path: Path) -> None:
    world = World.boot(tmp_path / "kernel", tmp_path, AccessPolicy(frozenset({0, 1000})))
    preserve(world.registry, "vm1", ram0=b"a")
    with pytest.raises(LuodError) as info:
        world.registry.register(OTHER, "vm1", Mode.HANDOVER)
    assert info.value.code == "not-owner"
    world.power_off()


def test_uid_outside_the_policy_is_not_allowed(world: World) -> None:
    with pytest.raises(LuodError) as info:
        world.registry.register(OTHER, "vm1", Mode.HANDOVER)
    assert info.value.code == "not-allowed"


def test_a_file_name_cannot_be_preserved_twice(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"a")
    fd = ram(b"b")
    with pytest.raises(LuodError) as info:
        world.registry.preserve(ROOT, "vm1", [FileSpec("ram0")], [fd])
    assert info.value.code == "file-exists" and fd.closed


def test_kernel_refusal_keeps_errno_and_hint(world: World) -> None:
    world.registry.register(ROOT, "vm1", Mode.HANDOVER)
    reader, writer = os.pipe()
    os.close(writer)
    with pytest.raises(LuodError) as info:
        world.registry.preserve(ROOT, "vm1", [FileSpec("ram0")], [OwnedFd(reader)])
    assert (info.value.code, info.value.errno) == ("luo-enoent", 2)
    assert "handler" in info.value.hint


def test_drop_forgets_the_vm_and_its_session(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"a")
    world.registry.drop(ROOT, "vm1")
    assert "vm1" not in world.registry.vms and not world.custody.recover()


def test_every_change_is_on_disk(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"a")
    on_disk = manifest.read_disk(world.registry.state_dir)
    assert on_disk is not None and on_disk.vms["vm1"].files["ram0"].token == 1


def test_manifest_from_a_newer_luod_is_refused(tmp_path: Path) -> None:
    raw = json.dumps({"version": manifest.VERSION + 1, "vms": []}).encode()
    with pytest.raises(LuodError) as info:
        manifest.Manifest.from_json(raw, "test")
    assert info.value.code == "manifest-too-new"


def test_manifest_memfd_is_sealed_without_exec_seal(world: World) -> None:
    with manifest.to_memfd(world.registry.manifest().to_json()) as fd:
        seals = memfd.get_seals(fd)
    assert seals & memfd.F_SEAL_WRITE and not seals & memfd.F_SEAL_EXEC


def test_reclaim_after_kexec_gives_the_bytes_back(world: World, tmp_path: Path) -> None:
    preserve(world.registry, "vm1", ram0=b"guest memory", state=b"device state")
    after = kexec(world, tmp_path)
    report = after.recover()
    assert (report.mode, report.restored) == ("after-kexec", ["vm1"])
    assert report.retrieved == ["luod", "luod.vm1"]  # nothing in custody: taken by name
    pairs = reclaim.reclaim(after.registry, ROOT, "vm1", None)
    got = {record.name: os.pread(fd.fileno(), 64, 0) for record, fd in pairs}
    assert got == {"ram0": b"guest memory", "state": b"device state"}
    reclaim.done(after.registry, ROOT, "vm1", force=False)
    assert after.registry.vms == {}
    for _, fd in pairs:
        fd.close()
    after.power_off()


def test_done_refuses_while_files_are_unreclaimed(world: World, tmp_path: Path) -> None:
    preserve(world.registry, "vm1", ram0=b"a", ram1=b"b")
    after = kexec(world, tmp_path)
    after.recover()
    pairs = reclaim.reclaim(after.registry, ROOT, "vm1", ("ram0",))
    with pytest.raises(LuodError) as info:
        reclaim.done(after.registry, ROOT, "vm1", force=False)
    assert info.value.code == "unreclaimed-files"
    reclaim.done(after.registry, ROOT, "vm1", force=True)
    pairs[0][1].close()
    after.power_off()


def test_restart_in_the_same_boot_takes_sessions_from_custody(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"a")
    state = world.registry.state_dir
    registry = Registry(world.backend, world.custody, state, POLICY)
    restarted = World(registry, world.backend, world.custody)
    world.registry.close()  # the old luod died; custody still holds the session
    report = restarted.recover()
    assert (report.mode, report.restored) == ("restart", ["vm1"])
    assert restarted.registry.vms["vm1"].state is VmState.PRESERVED


def test_a_boot_without_live_update_reports_vms_lost(world: World, tmp_path: Path) -> None:
    preserve(world.registry, "vm1", ram0=b"a")
    cold = World.boot(tmp_path / "other-kernel", world.registry.state_dir)
    report = cold.recover()
    assert (report.mode, report.lost) == ("lost-boot", ["vm1"])
    assert cold.registry.vms["vm1"].state is VmState.LOST
    with contextlib.suppress(Exception):
        cold.power_off()


def test_a_failed_reboot_is_reported_and_a_retry_works(world: World, tmp_path: Path) -> None:
    preserve(world.registry, "vm1", ram0=b"still here")
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    handoff.load_next_kernel(world.backend, image, None, None)
    sim_kernel(world.backend).fail_next_reboot()
    with pytest.raises(LuodError) as info:
        handoff.kexec_direct(world.registry, world.backend)
    assert (info.value.code, info.value.errno) == ("luo-eio", 5)
    registry = world.registry
    assert not registry.kexec_pending and registry.vms["vm1"].state is VmState.PRESERVED
    with pytest.raises(SimulatedKexec):
        handoff.kexec_direct(world.registry, world.backend)  # the retry carries everything
    after = World.boot(tmp_path / "kernel", world.registry.state_dir)
    assert after.recover().restored == ["vm1"]
    after.power_off()
