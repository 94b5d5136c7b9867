"""The supervisor: one VM, one QEMU, one connection to luod, from start (or restore) to exit.

It waits on three things at once (``selectors``): luod's socket (FREEZE, RESUME), QEMU's pidfd
(QEMU exited) and the signal wakeup fd (SIGTERM, SIGINT: the handlers only wake the loop).

- **FREEZE**: QMP ``stop``; the device state migrates into a new memfd ``state-N``; it and a
  ``freeze-N`` record (the wall time of ``stop``, the steps) are preserved; then ``READY``. A
  failure answers ``READY`` with the error (luod aborts the update for every VM), and the guest
  goes on (``cont``) unless QEMU is gone.
- **RESUME** (the update was aborted, or its reboot failed): ``cont``. The files of that attempt
  stay preserved (LUO cannot unpreserve one file); the next FREEZE uses ``state-N+1``.
- **SIGTERM** while the guest runs: QEMU quits and the VM is dropped from luod (the operator
  stopped it). While frozen (the host is going down for the kexec, e.g. ``systemctl kexec``
  stopping the unit): QEMU is killed, nothing is dropped.
- **QEMU exits** by itself: exit 0 (the guest powered off) drops the VM; anything else leaves
  what luod holds as it is, for the operator to look at.
- **luod goes away** (restart): reconnect and register again. A luod that comes back with the VM
  ``incoming`` has been through a kexec (only the simulator lets a VMM live through one): the
  old QEMU is killed and the VM restored from what luod preserved.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import signal
import socket
import time
from typing import Any

from luod.qemu import lifecycle
from luod.qemu.errors import QemuAdapterError
from luod.qemu.files import FreezeRecord, Memfd, VmSpec
from luod.qemu.options import Options
from luod.qemu.process import Qemu
from luod.qemu.report import Clock, Log
from luod.vmm.client import Client, ConnectionBroken, Event, LuodError
from luod.vmm.start_gate import Slot

RECONNECT_SECONDS = 60.0
RECONNECT_PAUSE = 0.2


class Supervisor:
    """``slot``: the host's start slot taken for this start (luod.qemu.start), released as soon
    as the VM runs, or when luod-qemu exits before that."""

    def __init__(self, options: Options, log: Log, slot: Slot | None = None) -> None:
        self.options = options
        self.log = log
        self.slot = slot
        self.vm = options.vm
        self.qemu: Qemu | None = None
        self.ram: Memfd | None = None
        self.spec = options.spec
        self.attempt = 0
        self.paused = False  # we sent stop (it may not have taken effect: a QMP timeout)
        self.frozen = False  # READY was sent: the guest waits for the kexec
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._signals: list[int] = []

    # --- start -------------------------------------------------------------------------------
    def run(self) -> int:
        if self.slot is not None:
            self.log.say("start-slot", **self.slot.describe())
        self.options.runtime_dir.mkdir(parents=True, exist_ok=True)
        with self._lock(), self._connect() as client:
            (self.options.runtime_dir / f"{self.vm}.json").unlink(missing_ok=True)
            self._install_signals()
            try:
                # the client's first request negotiates luod's extensions (FREEZE, RESUME)
                self._start(client, client.register(self.vm))
                return self._serve(client)
            finally:
                self._shutdown_qemu()

    def _connect(self) -> Client:
        """luod's socket; while luod starts (no socket yet, or a dead luod's) it is waited for,
        ``--wait-for-luod`` seconds, said once."""
        wait = self.options.wait_for_luod
        try:
            return Client(self.options.socket)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            missing: OSError = exc
        if wait > 0:
            self.log.say("waiting-for-luod", socket=self.options.socket, error=str(missing))
            try:
                return Client(self.options.socket, wait=wait)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                missing = exc
        raise QemuAdapterError(
            "luod-unavailable",
            f"no luod answers at {self.options.socket} ({missing.strerror}) after {wait:g} s",
            "start luod (under systemd: luod.socket), or give it longer: --wait-for-luod",
        ) from missing

    def _start(self, client: Client, record: dict[str, Any]) -> None:
        """Restore the VM if luod holds it from before a kexec, else boot it afresh."""
        state = record.get("state")
        if state in ("incoming", "reclaimed"):
            self._restore(client)
        elif self.options.spec is None:
            raise QemuAdapterError(
                "no-state",
                f"luod holds nothing to restore for VM {self.vm} (state {state!r})",
                "restore runs after a live update; start the VM with luod-qemu run",
            )
        else:
            if state == "preserved":  # a previous run of this VM, before any reboot: gone
                self.log.say("dropping-stale", state=state)
                client.drop(self.vm)
                client.register(self.vm)
            self._boot(client, self.options.spec)

    def _boot(self, client: Client, spec: VmSpec) -> None:
        self.ram, self.qemu = lifecycle.boot(client, self.options, spec, self.log, self._running)

    def _restore(self, client: Client) -> None:
        self.ram, self.qemu, self.spec = lifecycle.restore(
            client, self.options, self.log, self._running
        )

    def _running(self, ram: Memfd, qemu: Qemu) -> None:
        self.ram, self.qemu = ram, qemu
        if self.slot is not None:
            self.slot.release()  # the VM runs: the next VMM of the host may start
        self._write_status("running")

    # --- the loop ----------------------------------------------------------------------------
    def _serve(self, client: Client) -> int:
        while True:
            try:
                result = self._loop(client)
            except ConnectionBroken as exc:
                self.log.say("luod-lost", error=str(exc), frozen=self.frozen)
                client.close()
                client = self._reconnect()
                continue
            return result

    def _loop(self, client: Client) -> int:
        assert self.qemu is not None
        with selectors.DefaultSelector() as selector:
            selector.register(client.fileno(), selectors.EVENT_READ, "luod")
            selector.register(self.qemu.pidfd, selectors.EVENT_READ, "qemu")
            selector.register(self._wakeup_r, selectors.EVENT_READ, "signal")
            while True:
                event = client.wait_event(timeout=0)
                if event is not None:
                    with event:
                        if (code := self._on_event(client, event)) is not None:
                            return code
                    continue
                for key, _ in selector.select():
                    if key.data == "qemu":
                        return self._qemu_exited(client)
                    if key.data == "signal" and (code := self._on_signals(client)) is not None:
                        return code

    def _on_event(self, client: Client, event: Event) -> int | None:
        if event.data.get("id") not in (None, self.vm):
            return None
        if event.name == "FREEZE":
            return self._freeze(client)
        if event.name == "RESUME":
            self._resume(str(event.data.get("reason", "")))
        return None

    # --- freeze and resume -------------------------------------------------------------------
    def _freeze(self, client: Client) -> int | None:
        assert self.qemu is not None
        self.attempt += 1
        self.log.say("freezing", attempt=self.attempt)
        clock = Clock()
        try:
            record = self._save_and_preserve(client, clock)
        except (QemuAdapterError, LuodError) as exc:
            return self._refuse(client, exc)
        self._write_status("frozen")  # said before READY: luod may kexec at once after it
        self.log.say("frozen", attempt=self.attempt, state_bytes=record.state_bytes,
                     stop=clock.realtime, steps=clock.steps)  # fmt: skip
        client.ready(self.vm)
        self.frozen = True
        self.log.say("ready", seconds=clock.mark("ready"))
        return None

    def _save_and_preserve(self, client: Client, clock: Clock) -> FreezeRecord:
        assert self.qemu is not None
        self.paused = True
        self.qemu.stop()
        clock.mark("stopped")
        name = f"state-{self.attempt}"
        with Memfd.create(f"luod-qemu-{self.vm}-{name}") as state:
            size = self.qemu.save_state(state, self.options.qmp_timeout)
            clock.mark("state_saved")
            record = FreezeRecord(self.attempt, clock.realtime, dict(clock.steps), size)
            with Memfd.create(f"luod-qemu-{self.vm}-freeze", len(record.to_bytes())) as notes:
                notes.write_at(record.to_bytes())
                client.preserve(self.vm, {name: state, f"freeze-{self.attempt}": notes})
                clock.mark("preserved")
                record = record._replace(steps=dict(clock.steps))
                notes.write_at(record.to_bytes())  # within its size: allowed once preserved
        return record

    def _refuse(self, client: Client, exc: QemuAdapterError | LuodError) -> int | None:
        """Tell luod first (it aborts the update for every VM), then let the guest go on."""
        code = exc.code
        grace = 2.0 if code == "qmp-closed" else 0.0
        alive = self.qemu is not None and self.qemu.alive(grace)
        self.log.say("freeze-failed", attempt=self.attempt, code=code, error=str(exc),
                     hint=exc.hint, qemu_alive=alive)  # fmt: skip
        with contextlib.suppress(LuodError):
            client.ready(self.vm, error=f"luod-qemu: {exc}")
        if not alive:
            return 1  # nothing to resume; luod keeps the RAM preserved, nothing is dropped
        self._resume(f"freeze failed: {code}")
        return None

    def _resume(self, reason: str) -> None:
        if not (self.paused or self.frozen) or self.qemu is None:
            return
        try:
            self.qemu.cont()
        except QemuAdapterError as exc:
            self.log.say("resume-failed", code=exc.code, error=str(exc), hint=exc.hint)
            return
        self.paused = self.frozen = False
        self._write_status("running")
        self.log.say("resumed", reason=reason)

    # --- ends --------------------------------------------------------------------------------
    def _qemu_exited(self, client: Client) -> int:
        assert self.qemu is not None
        status = self.qemu.process.wait()
        self.log.say("qemu-exited", status=status, frozen=self.frozen)
        self.qemu.close()
        self.qemu = None
        if status == 0 and not self.frozen:
            client.drop(self.vm)  # the guest powered off: its RAM is free again
            self.log.say("dropped")
            return 0
        return 1

    def _on_signals(self, client: Client) -> int | None:
        with contextlib.suppress(BlockingIOError):
            self._wakeup_r.recv(64)
        numbers, self._signals = self._signals, []
        if not any(n in (signal.SIGTERM, signal.SIGINT) for n in numbers):
            return None
        self.log.say("stopping", frozen=self.frozen)
        if self.frozen:
            return 0  # the kexec comes: _shutdown_qemu kills the paused QEMU, nothing dropped
        assert self.qemu is not None
        self.qemu.quit(self.options.qmp_timeout)
        self.qemu.close()
        self.qemu = None
        client.drop(self.vm)
        self.log.say("dropped")
        return 0

    def _shutdown_qemu(self) -> None:
        if self.qemu is not None:
            self.qemu.kill()
            self.qemu = None
        if self.ram is not None:
            self.ram.close()

    def _reconnect(self) -> Client:
        deadline = time.monotonic() + RECONNECT_SECONDS
        while True:
            try:
                client = Client(self.options.socket)
                record = client.register(self.vm)  # with HELLO: FREEZE and RESUME asked for
                break
            except (OSError, LuodError) as exc:
                if time.monotonic() > deadline:
                    raise QemuAdapterError(
                        "luod-unavailable", f"luod did not come back: {exc}", "start luod"
                    ) from exc
                time.sleep(RECONNECT_PAUSE)  # luod is restarting: nothing to wait on but time
        state = record.get("state")
        self.log.say("luod-back", state=state)
        if state in ("incoming", "reclaimed"):  # it kexec'd under us (sim)
            self._shutdown_qemu()
            self.frozen = self.paused = False
            self._restore(client)
        elif state in ("lost", "registered"):  # luod had no custody of it: hand it over again
            self._preserve_again(client, lost=state == "lost")
        else:
            self._resume("luod restarted")
        return client

    def _preserve_again(self, client: Client, lost: bool) -> None:
        assert self.ram is not None and self.spec is not None
        if lost:
            client.drop(self.vm)
            client.register(self.vm)
        self._resume("luod restarted")
        lifecycle.preserve_running(client, self.spec, self.ram, self.log)

    # --- plumbing ----------------------------------------------------------------------------
    def _install_signals(self) -> None:
        self._wakeup_w.setblocking(False)
        self._wakeup_r.setblocking(False)
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda n, _: self._signals.append(n))

    @contextlib.contextmanager
    def _lock(self) -> Any:
        path = self.options.runtime_dir / f"{self.vm}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise QemuAdapterError(
                "vm-busy", f"another luod-qemu supervises VM {self.vm}", f"see {path}"
            ) from exc
        try:
            yield
        finally:
            os.close(fd)

    def _write_status(self, phase: str) -> None:
        """``RUNTIME_DIR/VM.json``: who runs the VM; the guest RAM is /proc/QEMU_PID/fd/RAM_FD."""
        assert self.qemu is not None and self.ram is not None
        status = {"vm": self.vm, "phase": phase, "supervisor_pid": os.getpid(),
                  "qemu_pid": self.qemu.pid, "ram_fd": self.ram.fileno()}  # fmt: skip
        path = self.options.runtime_dir / f"{self.vm}.json"
        path.with_suffix(".tmp").write_text(json.dumps(status))
        os.replace(path.with_suffix(".tmp"), path)
