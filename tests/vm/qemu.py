"""Boot a LUO kernel under QEMU/TCG and run shell "stages" in the guest, across real kexecs.

The guest shares the host's root file system read-only over 9p (so the project and its venv run
unchanged inside) plus a fresh writable 9p directory, the *share*. `guest-init` is PID 1: on boot
N it runs `stage-N` from the share and powers off, unless the stage kexecs, in which case the
next kernel runs `stage-N+1`. See guest-init for the files it leaves on the share.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.vm.log_port import qemu_args as port_args
from tests.vm.log_port import split as split_port_log

VM_DIR = Path(__file__).resolve().parent
GUEST_INIT = VM_DIR / "guest-init"
GET_KERNEL = VM_DIR / "get-kernel"
QEMU = "qemu-system-x86_64"
ROOT_FLAGS = "trans=virtio,version=9p2000.L,msize=262144,cache=loose"
TAIL_LINES = 30
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class KernelUnavailable(RuntimeError):
    """No LUO kernel could be found or built."""


@dataclass(frozen=True)
class StageResult:
    """What one stage left on the share."""

    number: int
    rc: int | None
    log: str = field(repr=False)
    dmesg: str = field(repr=False)
    started: bool
    kexeced: bool

    @property
    def ok(self) -> bool:
        """Exited 0, or handed over to the next kernel (a later boot happened)."""
        return self.rc == 0 or self.kexeced

    @property
    def status(self) -> str:
        if self.rc is not None:
            return f"exit code {self.rc}"
        if self.kexeced:
            return "kexec'd into the next boot"
        return "started but never finished" if self.started else "never ran"


@dataclass(frozen=True)
class GuestResult:
    """Outcome of one `run_guest` call; files stay in `run_dir` for inspection."""

    stages: list[StageResult]
    boots: int
    console: str = field(repr=False)
    elapsed: float
    run_dir: Path
    timed_out: bool
    qemu_pid: int
    qemu_returncode: int | None

    @property
    def share(self) -> Path:
        """The writable directory the guest saw at $LUOD_VM_SHARE."""
        return self.run_dir / "share"

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(stage.ok for stage in self.stages)

    def stage(self, number: int) -> StageResult:
        """The result of stage `number` (1-based, like the boots)."""
        return self.stages[number - 1]

    def failures(self) -> list[StageResult]:
        return [stage for stage in self.stages if not stage.ok]

    def check(self) -> GuestResult:
        """Raise AssertionError with a readable report unless every stage succeeded."""
        if not self.ok:
            raise AssertionError(self.report())
        return self

    def report(self) -> str:
        timeout = " TIMED OUT," if self.timed_out else ""
        lines = [
            f"VM run:{timeout} {self.boots} boot(s), {self.elapsed:.1f} s, "
            f"QEMU exit {self.qemu_returncode}, run dir {self.run_dir}",
        ]
        lines += [f"  stage {stage.number}: {stage.status}" for stage in self.stages]
        for stage in self.failures():
            lines.append(f"--- stage-{stage.number}.log (tail) ---")
            lines.append(tail(stage.log))
        lines.append("--- console.log (tail) ---")
        lines.append(tail(self.console))
        return "\n".join(lines)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def run_guest(
    stages: Sequence[str],
    *,
    kernel: Path,
    timeout: float = 300,
    memory: str = "2G",
    extra_cmdline: str = "",
    env: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    log_port: bool = False,
) -> GuestResult:
    """Boot `kernel` and run `stages` (shell script bodies) on boots 1, 2, ... in the guest.
    ``log_port``: with the virtio-serial port luod's logs go to (tests/vm/log_port.py), its
    sections split into the share's ``NAME.log`` files once the guest is off."""
    run_dir = make_run_dir(workdir)
    share = run_dir / "share"
    write_share(share, stages, env or {})
    command = qemu_command(kernel, share, memory, extra_cmdline)
    if log_port:
        command += port_args(share)
    (run_dir / "qemu-command").write_text(shlex.join(command) + "\n")
    qemu = run_qemu(command, run_dir / "console.log", timeout)
    if log_port:
        split_port_log(share)
    return collect(run_dir, len(stages), qemu)


def make_run_dir(workdir: Path | None) -> Path:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="luod-vm-", dir=workdir)).resolve()
    if "," in str(run_dir):
        raise ValueError(f"QEMU cannot share a path containing ',': {run_dir}")
    return run_dir


def write_share(share: Path, stages: Sequence[str], env: Mapping[str, str]) -> None:
    share.mkdir()
    for number, text in enumerate(stages, start=1):
        script = share / f"stage-{number}"
        script.write_text(f"#!/bin/sh\n{text}\n")
        script.chmod(0o755)
    if env:
        (share / "env").write_text(env_file_text(env))


def env_file_text(env: Mapping[str, str]) -> str:
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"not a valid environment variable name: {name!r}")
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in env.items())


def kernel_cmdline(
    extra: str = "", *, root: str = "hostroot", init: str | Path = GUEST_INIT
) -> str:
    """A 9p root file system (the share tagged ``root``), read-only, and ``init`` on it."""
    parts = [
        "console=ttyS0 liveupdate=on panic=-1",
        f"root={root} rootfstype=9p rootflags={ROOT_FLAGS} ro",
        f"init={init}",
        extra,
    ]
    return " ".join(part for part in parts if part)


def machine_command(kernel: Path, cmdline: str, memory: str) -> list[str]:
    """QEMU under TCG with no NIC, booting ``kernel``; the callers add their 9p shares."""
    machine = ["-accel", "tcg,tb-size=64", "-cpu", "max", "-m", memory, "-smp", "2"]
    devices = ["-nographic", "-no-reboot", "-nic", "none", "-device", "virtio-rng-pci"]
    return [QEMU, *machine, *devices, "-kernel", str(kernel), "-append", cmdline]


def qemu_command(kernel: Path, share: Path, memory: str, extra_cmdline: str = "") -> list[str]:
    return [
        *machine_command(kernel, kernel_cmdline(extra_cmdline), memory),
        *p9_share("/", "hostroot", readonly=True),
        *p9_share(str(share), "share", readonly=False),
    ]


def p9_share(path: str, tag: str, *, readonly: bool) -> list[str]:
    options = f"local,id={tag},path={path},security_model=none"
    if readonly:
        options += ",readonly=on,multidevs=remap"
    return ["-fsdev", options, "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]


@dataclass(frozen=True)
class QemuExit:
    pid: int
    returncode: int | None  # None: killed on timeout
    timed_out: bool
    elapsed: float


def run_qemu(command: list[str], console: Path, timeout: float) -> QemuExit:
    """Run QEMU with its serial console in `console`; kill its process group on timeout."""
    started = time.monotonic()
    returncode = None
    with console.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            kill_group(process)
    elapsed = time.monotonic() - started
    return QemuExit(process.pid, returncode, returncode is None, elapsed)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def collect(run_dir: Path, count: int, qemu: QemuExit) -> GuestResult:
    share = run_dir / "share"
    boots = int(read_text(share / "boot").strip() or 0)
    stages = [stage_result(share, number, boots) for number in range(1, count + 1)]
    return GuestResult(
        stages=stages,
        boots=boots,
        console=read_text(run_dir / "console.log"),
        elapsed=qemu.elapsed,
        run_dir=run_dir,
        timed_out=qemu.timed_out,
        qemu_pid=qemu.pid,
        qemu_returncode=qemu.returncode,
    )


def stage_result(share: Path, number: int, boots: int) -> StageResult:
    rc_text = read_text(share / f"stage-{number}.rc").strip()
    rc = int(rc_text) if rc_text else None
    started = (share / f"stage-{number}.started").exists()
    return StageResult(
        number=number,
        rc=rc,
        log=read_text(share / f"stage-{number}.log"),
        dmesg=read_text(share / f"dmesg-{number}.txt"),
        started=started,
        kexeced=started and rc is None and boots > number,
    )


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def resolve_kernel() -> Path:
    """Path of a usable LUO kernel, from tests/vm/get-kernel (which may build one)."""
    try:
        done = subprocess.run([str(GET_KERNEL)], capture_output=True, text=True, check=False)
    except OSError as error:
        raise KernelUnavailable(f"cannot run {GET_KERNEL}: {error}") from error
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        raise KernelUnavailable(
            f"{GET_KERNEL} failed (exit {done.returncode}):\n{tail(done.stderr)}"
        )
    return Path(lines[-1])
