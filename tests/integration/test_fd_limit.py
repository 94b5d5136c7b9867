"""luod started under the usual soft fd limit of 1024 (a shell, an init without LimitNOFILE=)
raises it to the hard limit itself (luod.kernel.fdtable.raise_limit): before, it ran out of fds
at about 200 VMs on the simulator (REGISTER and PRESERVE answered ``internal``, EMFILE writing
the journal), where the kernel carries 1000 and more."""

from __future__ import annotations

import contextlib
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.kernel import memfd
from luod.vmm.client import Client
from tests.integration.conftest import Daemon, start_daemon

SHELL_SOFT_LIMIT = 1024
VMS = 400  # each costs luod its session fd, custody's copy and the simulator's pipe pair


@contextlib.contextmanager
def soft_fd_limit(soft: int) -> Iterator[int]:
    """This process's soft RLIMIT_NOFILE lowered to ``soft`` (inherited by what it starts);
    yields the hard limit."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * soft:
        pytest.skip(f"the hard fd limit {hard} leaves nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))


def limits_of(pid: int) -> tuple[int, int]:
    text = Path(f"/proc/{pid}/limits").read_text()
    found = re.search(r"Max open files\s+(\d+)\s+(\d+)", text)
    assert found is not None, text
    return int(found[1]), int(found[2])


@pytest.fixture
def shell_started(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    with soft_fd_limit(SHELL_SOFT_LIMIT) as hard:
        running = start_daemon(tmp_path / "luod")
    yield running, hard
    assert running.stop() == 0


def test_luod_raises_its_soft_fd_limit_to_the_hard_one(
    shell_started: tuple[Daemon, int],
) -> None:
    daemon, hard = shell_started
    assert limits_of(daemon.process.pid) == (hard, hard)


def test_hundreds_of_vms_under_a_shells_fd_limit(shell_started: tuple[Daemon, int]) -> None:
    daemon, _ = shell_started
    with Client(daemon.socket) as client:
        for n in range(VMS):
            client.register(f"vm{n}")
            with memfd.create(f"vm{n}", 4096) as fd:
                client.preserve(f"vm{n}", {"ram0": fd})
        assert len(client.list()) == VMS
    log = daemon.log.read_text()
    assert "handler-crashed" not in log and "Too many open files" not in log


def test_raise_limit_leaves_an_equal_soft_limit_alone() -> None:
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))\n"
        "from luod.kernel import fdtable\n"
        "print(fdtable.raise_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["512", "512"]
