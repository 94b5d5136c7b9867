"""The last step before the kexec: put the manifest where the next kernel's luod will find it.

The manifest's snapshot went to token 0 of session ``luod`` and to disk before the freeze
(``Registry.stage_kexec``; the kernel cannot list sessions or tokens); here
``Registry.begin_kexec`` adds what changed since (token 1, the disk journal); then sync and
reboot. Direct mode:
luod, alive and holding every session, calls reboot(KEXEC). Systemd mode: every session is in
luod's fd store and ``systemctl kexec`` reboots (luod.core.kexec_mode). No other LUO call runs
meanwhile: luod's event loop awaits this step.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from luod.core import holds
from luod.core.registry import Registry
from luod.errors import LuodError
from luod.kernel import Backend, LuoError

log = structlog.get_logger("luod.handoff")


def load_next_kernel(
    backend: Backend, kernel: Path, initrd: Path | None, cmdline: str | None
) -> str:
    """kexec_file_load the next kernel; ``cmdline`` None reuses the running one."""
    text = cmdline if cmdline is not None else backend.info().cmdline
    try:
        backend.load_kernel(kernel, initrd, text)
    except LuoError as exc:
        raise LuodError.from_luo(exc) from exc
    return text


def require_loaded(backend: Backend) -> None:
    """Raises LuodError ``no-kernel-loaded`` unless a next kernel is loaded (a read of sysfs)."""
    if not backend.kernel_loaded():
        raise LuodError(
            "no-kernel-loaded",
            "no next kernel is loaded",
            "load one with kexec_file_load first (KEXEC kernel=...)",
            errno.EINVAL,
        )


def kexec_direct(
    registry: Registry, backend: Backend, in_time: Callable[[], None] = lambda: None
) -> None:
    """Hand over and reboot. Returns only if reboot(2) failed (state then rolled back); raises
    KernelGone where the caller outlives the kexec (the simulator). ``in_time`` runs after the
    sync, just before the reboot, and may raise LuodError to call the kexec off.

    Nothing here asks whether a next kernel is loaded: every VM is paused by now, and a read of
    /sys/kernel/kexec_loaded costs 1.6 ms of that pause under TCG (bench/NOTES.md). reboot(2)
    refuses with EINVAL, before it freezes anything, when no image is loaded (docs/kernel.md
    §5.2); that refusal is said as ``no-kernel-loaded``, as the check said it. The update driver
    checks before FREEZE (``require_loaded``)."""
    try:
        _hand_over(registry, backend.reboot_kexec, in_time)
    except LuodError as exc:
        if exc.errno == errno.EINVAL:  # no image, or not in the initial pid namespace
            require_loaded(backend)  # raises, saying so, in the first case
        raise


def kexec_systemd(
    registry: Registry,
    backend: Backend,
    start_kexec: Callable[[], None],
    in_time: Callable[[], None] = lambda: None,
) -> None:
    """Hand over into systemd's fd store, then ``start_kexec`` (``systemctl kexec``). Returns
    once systemd accepted the job: luod is stopped by it soon and must not touch the sessions
    again. Raises (state rolled back) when the custody is not the fd store or systemd refused.
    The loaded kernel is checked first: without one, ``systemctl kexec`` would load the boot
    loader's default kernel itself."""
    if registry.custody_kind != "systemd":
        raise LuodError(
            "kexec-mode",
            f"kexec through systemd needs systemd's fd store, luod's custody is "
            f"{registry.custody_kind}",
            "run luod as luod.service, or set kexec.mode = direct",
            errno.EINVAL,
        )
    require_loaded(backend)
    _hand_over(registry, start_kexec, in_time)


def _hand_over(registry: Registry, reboot: Callable[[], None], in_time: Callable[[], None]) -> None:
    try:
        began = time.monotonic()
        registry.begin_kexec()
        written = time.monotonic()
        os.sync()  # the host's (the VMs' disk images too): reboot(2) does not (docs/kernel.md §5.2)
        synced = time.monotonic()
        in_time()
        holds.hold_blocking("reboot")
        log.info(
            "kexec",
            vms=len(registry.vms),
            custody=registry.custody_kind,
            handoff_ms=round((written - began) * 1e3, 3),
            sync_ms=round((synced - written) * 1e3, 3),
        )
        reboot()
    except (LuoError, LuodError) as exc:
        registry.end_kexec()
        log.error("kexec-failed", error=str(exc))
        raise LuodError.from_luo(exc) if isinstance(exc, LuoError) else exc from exc


def kexec_abandoned(registry: Registry) -> None:
    """systemd accepted ``systemctl kexec`` but never stopped luod: the kexec is not coming.
    Sessions stay preserved (the state session is replaced on the next attempt)."""
    registry.end_kexec()
    log.error("kexec-abandoned", hint="see the journal for why the kexec job did not run")
