"""A hostile or careless VMM against the registry (issue 13 §1): bad fds and partial PRESERVEs
leave the journal and the session in agreement (findings 8 and 10), over the simulator."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from luod.core import manifest, reclaim
from luod.core.model import FileSpec, Mode
from luod.errors import LuodError
from luod.kernel import OwnedFd
from tests.unit.test_core import ROOT, World, kexec, ram


def o_path(fd: OwnedFd) -> OwnedFd:
    """The same memfd reopened with O_PATH: fstat works, F_GET_SEALS and read do not."""
    return OwnedFd(os.open(f"/proc/self/fd/{fd.fileno()}", os.O_PATH | os.O_CLOEXEC))


def pipe_reader() -> OwnedFd:
    reader, writer = os.pipe()
    os.close(writer)
    return OwnedFd(reader)


def on_disk(world: World, vm: str) -> list[str]:
    saved = manifest.read_disk(world.registry.state_dir)
    assert saved is not None
    return list(saved.vms[vm].files)


def test_finding10_an_o_path_fd_is_bad_fd_not_internal(world: World) -> None:
    world.registry.register(ROOT, "vm1", Mode.HANDOVER)
    with ram(b"guest") as source:
        bad = o_path(source)
        with pytest.raises(LuodError) as info:
            world.registry.preserve(ROOT, "vm1", [FileSpec("ram0")], [bad])
    assert (info.value.code, info.value.errno) == ("bad-fd", errno.EBADF)
    assert "O_PATH" in info.value.message and info.value.hint
    assert bad.closed and not world.registry.vms["vm1"].files


@pytest.mark.parametrize("second", [pipe_reader, o_path], ids=["pipe", "o-path"])
def test_finding8_every_fd_is_checked_before_any_is_preserved(
    world: World, second: Callable[..., OwnedFd]
) -> None:
    """A memfd plus a bad fd preserved the memfd anyway: a retry got file-exists (pipe) or the
    journal disagreed with the session (O_PATH)."""
    world.registry.register(ROOT, "vm1", Mode.HANDOVER)
    good = ram(b"guest ram")
    bad = second(good) if second is o_path else second()
    specs = [FileSpec("ram0"), FileSpec("ram1")]
    with pytest.raises(LuodError) as info:
        world.registry.preserve(ROOT, "vm1", specs, [OwnedFd(os.dup(good.fileno())), bad])
    assert info.value.code in ("luo-enoent", "bad-fd")
    assert not world.registry.vms["vm1"].files and on_disk(world, "vm1") == []
    world.registry.preserve(ROOT, "vm1", [FileSpec("ram0")], [good])  # not EBUSY, not exists
    assert on_disk(world, "vm1") == ["ram0"]


def test_finding8_a_kernel_refusal_midway_keeps_what_was_preserved_on_record(
    world: World, tmp_path: Path
) -> None:
    """Only the kernel knows a vfio fd: its refusal comes after ram0 was preserved, and LUO
    cannot unpreserve one file (docs/kernel.md §4.6). The error says what was kept, the
    manifest records it, and it crosses the kexec."""
    world.registry.register(ROOT, "vm1", Mode.HANDOVER)
    specs = [FileSpec("ram0"), FileSpec("dev0", "vfio")]
    with pytest.raises(LuodError) as info:
        world.registry.preserve(ROOT, "vm1", specs, [ram(b"kept"), pipe_reader()])
    assert info.value.code == "luo-enoent"
    assert "ram0" in info.value.message and "preserved" in info.value.message
    assert list(world.registry.vms["vm1"].files) == ["ram0"]
    assert on_disk(world, "vm1") == ["ram0"]
    after = kexec(world, tmp_path)
    after.recover()
    [(record, fd)] = reclaim.reclaim(after.registry, ROOT, "vm1", None)
    with fd:
        assert (record.name, os.pread(fd.fileno(), 4, 0)) == ("ram0", b"kept")
    after.power_off()
