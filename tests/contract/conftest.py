"""Contract tests: one kernel behaviour each, exact errno, on ``sim`` and on ``kernel``.

``kernel`` runs only inside the VM tier's guest (``LUOD_VM=1`` and /dev/liveupdate present),
never on a real host; elsewhere it is skipped with the reason shown. Multi-boot tests
(``@pytest.mark.boots(N)``) run their stages in one process on ``sim``; on ``kernel`` the guest
runs pytest once per boot with ``LUOD_CONTRACT_STAGE=k`` and this conftest kexecs between runs
while the carried session fds are still open (``pytest_unconfigure``).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.kernel import kernel_backend
from luod.kernel.sim import sim_backend
from tests.contract.harness import CARRIED, KernelStageRunner, Luo, SimRunner, sim_kernel
from tests.fds import fd_table

BACKENDS = ("sim", "kernel")
STAGE = int(os.environ.get("LUOD_CONTRACT_STAGE", "1"))
LAST_STAGE = int(os.environ.get("LUOD_CONTRACT_LAST_STAGE", "1"))
ONLY = os.environ.get("LUOD_CONTRACT_BACKENDS")


def kernel_available() -> bool:
    return os.environ.get("LUOD_VM") == "1" and os.path.exists("/dev/liveupdate")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "boots(n): the test spans n boots (n-1 kexecs)")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 16384
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", BACKENDS)


def boots_of(item: pytest.Item) -> int:
    marker = item.get_closest_marker("boots")
    return int(marker.args[0]) if marker else 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        if "contract" not in item.keywords:
            item.add_marker(pytest.mark.contract)
        name = item.callspec.params.get("backend_name") if hasattr(item, "callspec") else None
        wrong_backend = ONLY is not None and name is not None and name not in ONLY.split(",")
        not_this_boot = name == "kernel" and STAGE > 1 and boots_of(item) < STAGE
        (drop if wrong_backend or not_this_boot else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def fd_guard() -> Iterator[None]:
    """Fail a test that leaves an fd open (error paths included)."""
    before = fd_table()
    yield
    carried = {str(obj.fileno()) for obj in CARRIED if not getattr(obj, "closed", False)}
    after = fd_table()
    leaked = {fd: target for fd, target in after.items() if fd not in before and fd not in carried}
    assert not leaked, f"fds leaked by the test: {leaked}"


@pytest.fixture
def luo(
    fd_guard: None, backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Luo]:
    if backend_name == "sim" and request.node.get_closest_marker("kernel_only"):
        pytest.skip("kernel-only: the simulator cannot reproduce this (luod.kernel.sim docstring)")
    if backend_name == "kernel":
        if not kernel_available():
            pytest.skip("real-kernel contract runs only inside the VM tier (tests/vm)")
        backend = kernel_backend()
    else:
        backend = sim_backend(tmp_path / "sim")
    first = Luo(backend)
    request.node.luo_runner = None
    yield first
    runner = request.node.luo_runner
    luos = runner.luos if isinstance(runner, SimRunner) else [first]
    for each in luos:
        each.close_all(carried=True)
        if backend_name == "sim":
            sim_kernel(each.backend).close()


@pytest.fixture
def boots(
    luo: Luo, backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> SimRunner | KernelStageRunner:
    """Runner for multi-boot tests: ``boots.run(stage1, stage2, ...)``."""
    if backend_name == "sim":
        runner: SimRunner | KernelStageRunner = SimRunner(tmp_path / "sim", luo)
    else:
        state = Path(os.environ.get("LUOD_CONTRACT_STATE", tmp_path / "state.json"))
        runner = KernelStageRunner(luo, STAGE, state, request.node.nodeid)
    request.node.luo_runner = runner
    return runner


def pytest_unconfigure(config: pytest.Config) -> None:
    """In a real-kernel boot that is not the last: kexec with the carried sessions open."""
    if not (ONLY == "kernel" and kernel_available() and STAGE < LAST_STAGE):
        return
    from tests.contract.kexec_next import kexec_into_next_boot

    kexec_into_next_boot()
