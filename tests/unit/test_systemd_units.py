"""The unit files pass `systemd-analyze verify` (with ExecStart pointed at this venv's luod).

The only complaint allowed is a key newer than the installed systemd: Debian 12 has 252,
FileDescriptorStorePreserve= came with 254 (luod relies on it with systemd 261+ for
`systemctl kexec`; older systemd ignores it and keeps the fd store across restarts anyway).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
NEWER_KEYS = ("FileDescriptorStorePreserve",)


def test_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze missing: apt-get install systemd (tests/vm/ensure-host-tools)")
    for unit in UNITS.glob("luod*"):
        text = unit.read_text().replace("/usr/bin/luod", str(Path(sys.executable).parent / "luod"))
        (tmp_path / unit.name).write_text(text)
    units = ("luod.service", "luod.socket", "luod-api.socket", "luod-ready.target")
    names = [str(tmp_path / n) for n in units]
    done = subprocess.run(
        [analyze, "verify", "--man=no", *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and not any(f"'{key}'" in line for key in NEWER_KEYS)
    ]
    assert done.returncode == 0 and not complaints, "\n".join(complaints)


def test_the_service_keeps_what_custody_and_kexec_need() -> None:
    service = (UNITS / "luod.service").read_text()
    for line in (
        "Type=notify",
        "FileDescriptorStoreMax=4096",
        "FileDescriptorStorePreserve=yes",
        "DeviceAllow=/dev/liveupdate rw",
        "SystemCallArchitectures=native",
        "RuntimeDirectory=luod",
        "StateDirectory=luod",
        "WatchdogSec=",
    ):
        assert line in service
    assert "CAP_SYS_BOOT" in service
    socket_unit = (UNITS / "luod.socket").read_text()
    assert "FileDescriptorName=liveupdate" in socket_unit  # what luod looks for in LISTEN_FDS
    assert "FileDescriptorName=api" in (UNITS / "luod-api.socket").read_text()
