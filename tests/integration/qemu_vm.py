"""Helpers of the luod-qemu integration tests: a luod-qemu process running a real QEMU (the
boot-sector guest of tests/vm/l2guest.py) against a luod on the simulator."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from luod.qemu.canary import qemu_args, write_floppy
from tests.vm.l2guest import GuestRam

QEMU = "qemu-system-x86_64"
WAIT = 30.0


def require_qemu() -> None:
    """The host's QEMU runs these guests; a missing one fails the test (never skips it)."""
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} missing: tests/vm/ensure-host-tools installs it", pytrace=False)


class LuodQemu:
    """``luod-qemu`` in its own process group (QEMU with it), its JSON lines in a log file."""

    def __init__(
        self,
        workdir: Path,
        socket: Path,
        vm: str = "vm1",
        *,
        entry: str = "luod.qemu.cli",
        env: dict[str, str] | None = None,
    ) -> None:
        """``entry``: the module run (luod.qemu.start: as installed, with the host's start
        slots); ``env``: added to this process's environment."""
        require_qemu()
        workdir.mkdir(parents=True, exist_ok=True)
        self.entry = entry
        self.env = {**os.environ, **(env or {})}
        self.workdir = workdir
        self.socket = socket
        self.vm = vm
        self.runtime = workdir / "run"
        self.report = workdir / "report.jsonl"
        self.floppy = write_floppy(workdir / "floppy.img")
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "luod-qemu-0.log"
        self.runs = 0

    def start(self, command: str = "run", *extra: str, ram: str = "64M") -> LuodQemu:
        self.runs += 1
        self.log = self.workdir / f"luod-qemu-{self.runs}.log"
        args = [sys.executable, "-m", self.entry, command, "--id", self.vm,
                "--socket", str(self.socket), "--runtime-dir", str(self.runtime),
                "--report", str(self.report), *extra]  # fmt: skip
        if command == "run":
            args += ["--ram", ram, "--", *qemu_args(self.floppy)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=self.env
            )
        return self

    def events(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_event(self, name: str, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e["event"] == name]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} from luod-qemu:\n{self.log.read_text()}")

    def wait_exit(self, timeout: float = WAIT) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def status(self, timeout: float = WAIT) -> dict[str, Any]:
        """The status file this luod-qemu process wrote (not an earlier one's)."""
        assert self.process is not None
        path = self.runtime / f"{self.vm}.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                status: dict[str, Any] = json.loads(path.read_text())
                if status["supervisor_pid"] == self.process.pid:
                    return status
            time.sleep(0.05)
        raise AssertionError(f"no status from luod-qemu:\n{self.log.read_text()}")

    def ram(self) -> GuestRam:
        self.status()
        return GuestRam(self.runtime / f"{self.vm}.json")

    def kill(self) -> None:
        """SIGKILL the whole group (luod-qemu and its QEMU), as a kexec would end them."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def counting(ram: GuestRam, above: int = 0, timeout: float = WAIT) -> int:
    """The guest's counter once it is above ``above`` (the guest runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ram.probe()["counter"]
        if value > above:
            return int(value)
        time.sleep(0.05)
    raise AssertionError(f"the guest's counter stayed at or below {above}")
