"""kexec_file_load and reboot(KEXEC) refusals (docs/kernel.md §5.2, §7.1)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from luod.kernel import LuoError
from tests.contract.harness import FAKE_BZIMAGE, Luo


def next_kernel(backend_name: str, tmp_path: Path) -> Path:
    if backend_name == "kernel":
        return Path(os.environ["LUOD_NEXT_KERNEL"])
    image = tmp_path / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    return image


def test_kexec_file_load_of_a_non_kernel_file_is_enoexec(luo: Luo, tmp_path: Path) -> None:
    junk = tmp_path / "not-a-kernel"
    junk.write_bytes(b"\x7fELF" + bytes(8192))
    with pytest.raises(LuoError) as info:
        luo.backend.load_kernel(junk, cmdline="liveupdate=on")
    assert info.value.errno == errno.ENOEXEC


def test_kexec_file_load_of_a_missing_file_names_it(luo: Luo, tmp_path: Path) -> None:
    with pytest.raises(LuoError) as info:
        luo.backend.load_kernel(tmp_path / "absent", cmdline="liveupdate=on")
    assert info.value.errno == errno.ENOENT
    assert "absent" in str(info.value)


def test_reboot_without_a_loaded_image_is_einval(luo: Luo) -> None:
    assert not luo.backend.kernel_loaded()
    with pytest.raises(LuoError) as info:
        luo.backend.reboot_kexec()
    assert info.value.errno == errno.EINVAL


def test_load_then_unload_the_next_kernel(luo: Luo, backend_name: str, tmp_path: Path) -> None:
    luo.backend.load_kernel(next_kernel(backend_name, tmp_path), cmdline="liveupdate=on")
    assert luo.backend.kernel_loaded()
    luo.backend.unload_kernel()
    assert not luo.backend.kernel_loaded()
