"""What PRESERVE_FD does to the caller's own memfd (docs/kernel.md §6.2). The size freeze and the
pinning live in shmem, which the simulator does not own: these run on the real kernel only."""

from __future__ import annotations

import errno
import os
import time

import pytest

from luod.kernel import OwnedFd, memfd
from tests.contract.harness import Luo

pytestmark = pytest.mark.kernel_only


def preserved(luo: Luo, name: str) -> OwnedFd:
    fd = luo.memfd(b"x" * 4096)
    luo.create(name).preserve(fd, 1)
    return fd


def test_ftruncate_of_preserved_memfd_is_eperm(luo: Luo) -> None:
    fd = preserved(luo, "freeze-truncate")
    with pytest.raises(OSError) as info:
        os.ftruncate(fd.fileno(), 8192)
    assert info.value.errno == errno.EPERM


def test_fallocate_of_preserved_memfd_is_eperm(luo: Luo) -> None:
    fd = preserved(luo, "freeze-fallocate")
    with pytest.raises(OSError) as info:
        os.posix_fallocate(fd.fileno(), 0, 8192)
    assert info.value.errno == errno.EPERM


def test_write_at_eof_of_preserved_memfd_is_eperm(luo: Luo) -> None:
    fd = preserved(luo, "freeze-eof")
    with pytest.raises(OSError) as info:
        os.pwrite(fd.fileno(), b"y", 4096)
    assert info.value.errno == errno.EPERM


def test_write_crossing_eof_of_preserved_memfd_is_short(luo: Luo) -> None:
    fd = preserved(luo, "freeze-cross")
    assert os.pwrite(fd.fileno(), b"yz", 4095) == 1


def test_write_inside_preserved_memfd_is_fine(luo: Luo) -> None:
    fd = preserved(luo, "freeze-inside")
    assert os.pwrite(fd.fileno(), b"inside", 100) == 6


def test_add_write_seal_after_preserve_is_ebusy(luo: Luo) -> None:
    fd = preserved(luo, "freeze-seal")
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        memfd.add_seals(fd, memfd.F_SEAL_WRITE)
    assert info.value.errno == errno.EBUSY
    assert time.monotonic() - started > 0.05  # memfd_wait_for_pins() gave up


def test_closing_the_session_lifts_the_size_freeze(luo: Luo) -> None:
    fd = luo.memfd(b"x" * 4096)
    session = luo.create("freeze-lift")
    session.preserve(fd, 1)
    session.close()
    os.ftruncate(fd.fileno(), 8192)
