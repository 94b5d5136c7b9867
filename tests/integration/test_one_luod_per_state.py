"""Two luods on one state directory (issue 13, finding 6): the second refuses with
``state-dir-locked`` and exit code 3, and touches nothing of the first's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from luod.main import EXIT_LOCKED
from luod.vmm.client import Client
from tests.integration.conftest import Daemon


def test_a_second_luod_on_the_same_state_dir_refuses_and_touches_nothing(
    daemon: Daemon, tmp_path: Path
) -> None:
    with Client(daemon.socket) as client:
        client.register("vm1")
    manifest = (daemon.state / "manifest.json").read_bytes()
    socket_inode = daemon.socket.stat().st_ino
    second = subprocess.run(
        [sys.executable, "-m", "luod", "--simulate", str(daemon.state), "--no-api"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == EXIT_LOCKED
    assert b"state-dir-locked" in second.stderr
    assert daemon.alive()
    assert daemon.socket.stat().st_ino == socket_inode
    assert (daemon.state / "manifest.json").read_bytes() == manifest
    with Client(daemon.socket) as client:
        assert [vm["id"] for vm in client.list()] == ["vm1"]
