"""VM tier: tests here boot a LUO kernel under QEMU/TCG (see qemu.py and guest-init)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.vm.qemu import KernelUnavailable, resolve_kernel

VM_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected under tests/vm with `vm`."""
    for item in items:
        if item.path.resolve().is_relative_to(VM_DIR):
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def luo_kernel() -> Path:
    """A bootable LUO kernel; fails (never skips) when none can be found or built."""
    try:
        return resolve_kernel()
    except KernelUnavailable as error:
        pytest.fail(
            f"no LUO test kernel: {error}\n"
            "Set LUOD_TEST_KERNEL=/path/to/bzImage, or let tests/vm/build-kernel build one.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def vm_python() -> Path:
    """The host interpreter of this venv; the guest sees the host root, so it runs there too."""
    return Path(sys.executable).absolute()
