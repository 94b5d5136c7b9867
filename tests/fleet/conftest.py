"""Fleet tier: the Ansible collection (packaging/ansible_collections/luod/liveupdate) driving
simulated luods, plus its build, lint and sanity checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.harness import Fleet, bzimage
from tests.vm.conftest import luo_kernel, vm_python  # the real-kernel tier's fixtures

__all__ = ["luo_kernel", "vm_python"]

FLEET_DIR = Path(__file__).resolve().parent
SIZE = 20


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(FLEET_DIR):
            item.add_marker(pytest.mark.fleet)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Twenty simulated hypervisors, two demo VMMs each, on the simulator's release."""
    hosts = Fleet(tmp_path_factory.mktemp("fleet"), SIZE)
    hosts.start()
    try:
        yield hosts
    finally:
        hosts.stop()


@pytest.fixture(scope="module")
def kernels(fleet: Fleet) -> dict[str, Path]:
    """The next kernels, as every host sees them (one file system)."""
    boot = fleet.root / "boot"
    return {
        "B": bzimage(boot / "vmlinuz-7.3.4-fleet", "7.3.4-fleet"),
        "C": bzimage(boot / "vmlinuz-7.3.5-fleet", "7.3.5-fleet"),
    }
