"""Bringing a VM up: afresh (``boot``) or, after the kexec, from what luod preserved (``restore``).

``boot`` creates the guest RAM memfd, starts QEMU on it and, while the guest already runs,
preserves the RAM and the VM's description through luod (preserving is linear in the RAM size,
so it happens long before any update).

``restore`` reclaims every file of the VM, starts QEMU on the reclaimed RAM with ``-incoming
defer``, loads the device state of the last FREEZE, ``cont``, and only then says ``DONE`` (luod
FINISHes the session). Anything that fails before ``DONE`` leaves every file in luod's custody:
the same command can try again. Then the RAM and the description are preserved again, for the
next update. The report (``restored``) gives the guest-visible pause (QMP ``stop`` before the
kexec to ``cont`` after it), the device-state size and the time of each step.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from luod.qemu.errors import QemuAdapterError
from luod.qemu.files import FreezeRecord, Memfd, VmSpec
from luod.qemu.options import Options
from luod.qemu.process import Qemu, taps
from luod.qemu.report import Clock, Log, process_start
from luod.vmm.client import Client, LuodError

STATE_NAME = re.compile(r"state-([0-9]+)")
Running = Callable[[Memfd, Qemu], None]  # called as soon as the guest runs


def boot(
    client: Client, options: Options, spec: VmSpec, log: Log, running: Running
) -> tuple[Memfd, Qemu]:
    ram = Memfd.create(f"luod-qemu-{spec.vm}-ram0", spec.ram)
    try:
        qemu = Qemu.start(
            spec,
            ram,
            incoming=False,
            timeout=options.qmp_timeout,
            start_timeout=options.start_timeout,
        )
    except BaseException:
        ram.close()
        raise
    try:  # from here on, however this ends, QEMU is not left running on its own
        log.say("started", qemu_pid=qemu.pid, ram_bytes=spec.ram, qemu_version=qemu.qmp.version)
        running(ram, qemu)
        preserve_running(client, spec, ram, log)
    except BaseException:
        qemu.kill()
        ram.close()
        raise
    return ram, qemu


def preserve_running(client: Client, spec: VmSpec, ram: Memfd, log: Log) -> None:
    """Hand the RAM and the description to luod while the guest runs, and declare its taps
    (luod rebuilds them after the kexec, before RECLAIM answers)."""
    clock = Clock()
    if nics := taps(spec.args):
        client.nics(spec.vm, nics)
    with spec.to_memfd() as description:
        client.preserve(spec.vm, {"ram0": ram, "spec": description})
    log.say("preserved", ram_bytes=spec.ram, seconds=clock.mark("preserved"))


def restore(
    client: Client, options: Options, log: Log, running: Running
) -> tuple[Memfd, Qemu, VmSpec]:
    clock = Clock(origin=process_start())
    clock.mark("registered")
    reclaimed = client.reclaim(options.vm)  # the VM's taps are rebuilt by now (nics)
    files = {name: Memfd.adopt(fd) for name, fd in reclaimed.items()}
    clock.mark("reclaimed")
    log.say("reclaimed", files=sorted(files), nics=reclaimed.nics)
    if reclaimed.nics is not None and not reclaimed.nics.get("ready"):
        log.say("nics-not-ready", problems=reclaimed.nics.get("problems", []),
                note="QEMU starts anyway: a missing tap comes back unbridged")  # fmt: skip
    try:
        spec, attempt, record = _what_to_restore(files, options)
        qemu = _start_and_load(spec, files, attempt, options, clock)
    except BaseException as exc:
        for memfd in files.values():
            memfd.close()
        if isinstance(exc, QemuAdapterError | LuodError):
            retry = "luod keeps every file: run the same command again"
            log.say("restore-failed", code=exc.code, error=str(exc), hint=exc.hint,
                    steps=clock.steps, retry=retry)  # fmt: skip
        raise
    ram = files.pop("ram0")
    for memfd in files.values():
        memfd.close()
    running(ram, qemu)
    _finish(client, spec, ram, log, clock, record)
    return ram, qemu, spec


def _what_to_restore(
    files: dict[str, Memfd], options: Options
) -> tuple[VmSpec, int, FreezeRecord | None]:
    if "spec" not in files or "ram0" not in files:
        raise QemuAdapterError(
            "bad-spec",
            f"VM {options.vm} in luod has no ram0 or spec file: {sorted(files)}",
            "it was not preserved by luod-qemu",
        )
    spec = VmSpec.from_bytes(files["spec"].read())
    if options.qemu is not None:
        spec = spec._replace(qemu=options.qemu)
    attempts = [int(m[1]) for name in files if (m := STATE_NAME.fullmatch(name))]
    if not attempts:
        raise QemuAdapterError(
            "no-state",
            f"VM {options.vm} was preserved without device state (it never froze)",
            "its QEMU did not answer FREEZE; the RAM alone cannot resume a guest",
        )
    attempt = max(attempts)
    notes = files.get(f"freeze-{attempt}")
    return spec, attempt, FreezeRecord.from_bytes(notes.read()) if notes else None


def _start_and_load(
    spec: VmSpec, files: dict[str, Memfd], attempt: int, options: Options, clock: Clock
) -> Qemu:
    timeout = options.qmp_timeout
    qemu = Qemu.start(
        spec, files["ram0"], incoming=True, timeout=timeout, start_timeout=options.start_timeout
    )
    clock.mark("qemu_started")
    try:
        qemu.load_state(files[f"state-{attempt}"], timeout)
        clock.mark("state_loaded")
        qemu.cont()
        clock.mark("cont")
    except BaseException:
        qemu.kill()
        raise
    return qemu


def _finish(
    client: Client, spec: VmSpec, ram: Memfd, log: Log, clock: Clock, record: FreezeRecord | None
) -> None:
    """DONE, the report, and the RAM preserved again for the next update (the guest runs)."""
    try:
        client.done(spec.vm)
        clock.mark("done")
    except LuodError as exc:  # the guest runs: keep it running, say why it is not protected
        log.say("done-failed", code=exc.code, error=str(exc), hint=exc.hint)
        return
    log.say("restored", **_report(clock, record))
    client.register(spec.vm)
    preserve_running(client, spec, ram, log)


def _report(clock: Clock, record: FreezeRecord | None) -> dict[str, object]:
    report: dict[str, object] = {"after_kexec": clock.steps, "process_start": clock.realtime}
    if record is not None:
        ready = record.stop + record.steps.get("preserved", 0.0)
        report |= {
            "pause": round(clock.wall("cont") - record.stop, 6),
            "state_bytes": record.state_bytes,
            "before_kexec": record.steps,
            "reboot": round(clock.realtime - ready, 6),  # READY .. this process's exec
            "own": round(record.steps.get("preserved", 0.0) + clock.steps["cont"], 6),
        }
    return report
