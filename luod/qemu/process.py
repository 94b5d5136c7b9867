"""One QEMU process of a VM: its command line, its start, and the QMP steps luod-qemu takes.

QEMU gets the guest RAM as an inherited memfd (``memory-backend-file`` on
``/proc/self/fd/N``, ``share=on``, the machine's ``memory-backend``) and its monitor as one end
of a socketpair (``-chardev socket,fd=N``): no path to race for, no polling until QEMU listens.
Migration runs with ``x-ignore-shared``, so the RAM stays in its memfd and only the device state
travels (``fd:`` URIs on a pipe passed with ``getfd``, see ``pump``), and with ``events``, so
luod-qemu waits for QEMU's MIGRATION event instead of polling ``query-migrate``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
from typing import IO, Any

from luod.qemu.errors import QemuAdapterError
from luod.qemu.files import Memfd, VmSpec
from luod.qemu.pump import Pump
from luod.qemu.qmp import Qmp

RAM_ID = "luod-ram0"
MONITOR_ID = "luod-qmp"
STATE_FD_NAME = "luod-state"
RESERVED_OPTIONS = ("-m", "-incoming", "-S")
CAPABILITIES = [
    {"capability": "x-ignore-shared", "state": True},
    {"capability": "events", "state": True},
]
MIGRATION_ENDS = ("completed", "failed", "cancelled")


def check_args(args: tuple[str, ...]) -> None:
    """The user's QEMU arguments may not set what luod-qemu sets itself."""
    for arg in args:
        if arg.split("=")[0] in RESERVED_OPTIONS:
            raise QemuAdapterError(
                "bad-argument",
                f"QEMU argument {arg} is luod-qemu's to set",
                "give the RAM size with --ram; luod-qemu adds -m, -incoming and the memory backend",
            )


def taps(args: tuple[str, ...]) -> list[str]:
    """The host taps the user's QEMU arguments attach (``-netdev tap,ifname=X`` or ``-nic
    tap,ifname=X``): luod records them at prepare and rebuilds them after the kexec, so the
    restored QEMU opens the same taps, on the same bridge, with the same MAC and queues."""
    found = []
    for option, value in itertools.pairwise(args):
        if option.lstrip("-") not in ("netdev", "nic"):
            continue
        parts = value.split(",")
        fields = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
        if parts[0] == "tap" and fields.get("ifname"):
            found.append(fields["ifname"])
    return found


def command(spec: VmSpec, ram_fd: int, monitor_fd: int, *, incoming: bool) -> list[str]:
    memory = f"memory-backend-file,id={RAM_ID},size={spec.ram},mem-path=/proc/self/fd/{ram_fd}"
    return [
        spec.qemu,
        *spec.args,
        "-m", f"{spec.ram // 1024}K",
        "-object", f"{memory},share=on",
        "-machine", f"memory-backend={RAM_ID}",
        "-chardev", f"socket,id={MONITOR_ID},fd={monitor_fd}",
        "-mon", f"chardev={MONITOR_ID},mode=control",
        *(["-incoming", "defer"] if incoming else []),
    ]  # fmt: skip


class Qemu:
    """A running QEMU: its process, its QMP connection, and a pidfd that polls readable on exit."""

    def __init__(self, process: subprocess.Popen[bytes], qmp: Qmp, pidfd: int) -> None:
        self.process = process
        self.qmp = qmp
        self.pidfd = pidfd

    @classmethod
    def start(
        cls,
        spec: VmSpec,
        ram: Memfd,
        *,
        incoming: bool,
        timeout: float,
        start_timeout: float = 60.0,
        output: IO[bytes] | None = None,
    ) -> Qemu:
        """Start QEMU and wait up to ``start_timeout`` s for its monitor; QMP commands then
        time out after ``timeout`` s."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = command(spec, ram.fileno(), theirs.fileno(), incoming=incoming)
        try:
            process = subprocess.Popen(
                argv,
                pass_fds=(ram.fileno(), theirs.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        except OSError as exc:
            ours.close()
            raise QemuAdapterError(
                "qemu-start-failed", f"cannot run {spec.qemu}: {exc}", "check the QEMU binary"
            ) from exc
        finally:
            theirs.close()
        try:
            qmp = Qmp.handshake(ours, start_timeout)
            qmp.timeout = timeout
        except QemuAdapterError as exc:
            _kill(process)
            raise QemuAdapterError(
                "qemu-start-failed",
                f"QEMU exited with status {process.returncode} before its monitor answered "
                f"({exc.message})",
                "see QEMU's messages above; its arguments: " + " ".join(argv),
            ) from exc
        qemu = cls(process, qmp, os.pidfd_open(process.pid))
        try:
            qmp.execute("migrate-set-capabilities", {"capabilities": CAPABILITIES})
        except QemuAdapterError:
            qemu.kill()
            raise
        return qemu

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self, grace: float = 0.0) -> bool:
        """Whether QEMU still runs, waiting up to ``grace`` s for one that is exiting (its
        monitor's EOF comes before the kernel has finished its exit)."""
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            return True
        return False

    def status(self) -> str:
        return str(self.qmp.execute("query-status")["status"])

    def stop(self) -> None:
        self.qmp.execute("stop")

    def cont(self) -> None:
        self.qmp.execute("cont")

    def save_state(self, into: Memfd, timeout: float) -> int:
        """Migrate the device state (not the RAM) into ``into``; its size in bytes."""
        self._migrate("migrate", Pump(into, from_qemu=True), timeout, "saving")
        return into.size

    def load_state(self, state: Memfd, timeout: float) -> None:
        """Load the device state saved by :meth:`save_state` (QEMU started ``incoming``)."""
        self._migrate("migrate-incoming", Pump(state, from_qemu=False), timeout, "loading")

    def _migrate(self, command: str, pump: Pump, timeout: float, doing: str) -> None:
        try:
            self.qmp.execute("getfd", {"fdname": STATE_FD_NAME}, fd=pump.qemu_end)
            pump.handed_over()
            try:
                self.qmp.execute(command, {"uri": f"fd:{STATE_FD_NAME}"})
            except QemuAdapterError:
                with contextlib.suppress(QemuAdapterError):  # QEMU lets go of its end: EOF
                    self.qmp.execute("closefd", {"fdname": STATE_FD_NAME})
                raise
            try:
                self._migration_end(timeout, doing, pump)
                pump.finish(timeout)
            except QemuAdapterError:
                with contextlib.suppress(QemuAdapterError):  # a hung one: the guest may go on
                    self.qmp.execute("migrate_cancel", timeout=1.0)
                raise
        finally:
            pump.close()

    def _migration_end(self, timeout: float, doing: str, pump: Pump) -> None:
        event = self.qmp.wait_event("MIGRATION", timeout, status=MIGRATION_ENDS)
        status = event["data"]["status"]
        if status != "completed":
            info: dict[str, Any] = self.qmp.execute("query-migrate") or {}
            reasons = [str(info.get("error-desc", "")), pump.error]
            reason = "; ".join(r for r in reasons if r) or "no reason given"
            raise QemuAdapterError(
                "migration-failed",
                f"{doing} the device state {status}: {reason}",
                "the guest RAM is untouched; see QEMU's messages",
            )

    def quit(self, timeout: float) -> int | None:
        """Ask QEMU to exit, kill it if it does not; its exit status."""
        with contextlib.suppress(QemuAdapterError):
            self.qmp.execute("quit")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        _kill(self.process)
        return self.close()

    def close(self) -> int | None:
        self.qmp.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        return self.process.poll()


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
    process.wait()
