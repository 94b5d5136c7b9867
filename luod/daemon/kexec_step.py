"""The kexec step of an update: direct (luod calls reboot(KEXEC)) or through systemd
(``systemctl kexec`` with every session in the fd store), as luod.core.kexec_mode decides."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

import structlog

from luod.core import handoff, kexec_mode
from luod.core.kexec_mode import KexecPlan, SystemdFacts
from luod.core.registry import Registry
from luod.errors import LuodError
from luod.kernel import Backend
from luod.values import Value

log = structlog.get_logger("luod.update")


def _no_systemctl() -> None:
    raise LuodError("kexec-mode", "no systemctl here", "set kexec.mode = direct")


class _KexecSettings(NamedTuple):
    mode: str = "direct"  # configured: auto | direct | systemd
    facts: Callable[[], SystemdFacts] = lambda: SystemdFacts("memory")
    start: Callable[[], None] = _no_systemctl  # systemctl kexec
    stop_timeout: float = 120.0  # systemd accepted the kexec but never stopped luod: give up


class KexecSettings(Value, _KexecSettings):
    """How the kexec step runs (luod.core.kexec_mode); the callables are the host adapters."""

    __slots__ = ()


class KexecStep:
    def __init__(self, registry: Registry, backend: Backend, settings: KexecSettings) -> None:
        self.registry = registry
        self.backend = backend
        self.settings = settings
        self._facts: SystemdFacts | None = None
        self.handed_to_systemd = False  # systemctl kexec accepted: systemd stops luod now

    def plan(self) -> KexecPlan:
        """The kexec mode that applies now; the host's facts are asked once per luod."""
        if self._facts is None:
            self._facts = self.settings.facts()
        return kexec_mode.choose(self.settings.mode, self._facts)

    async def run(self, plan: KexecPlan, in_time: Callable[[], None] = lambda: None) -> None:
        """Returns only if the kexec did not happen, by raising LuodError (state rolled back);
        luod.kernel.KernelGone where luod outlives it (the simulator). ``in_time`` is called
        just before the reboot (or systemctl kexec) and raises to call it off.

        The direct kexec runs on the event loop's own thread: a hop into a worker thread cost
        0.6-1.9 ms of every VM's pause in a TCG guest (bench/NOTES.md), and what it kept the loop
        free for is a sync(2) that has little left (the driver syncs before FREEZE). A sync that
        hangs keeps the VMs paused either way (``in_time`` runs after it); with the loop blocked,
        systemd's watchdog also ends luod once the sync returns, and the luod started after it
        resumes the VMs, as after a luod killed just before the reboot (tests/vm/test_chaos.py).
        ``systemctl kexec`` still goes through a thread: it waits for systemd."""
        if plan.mode == "systemd":
            await asyncio.to_thread(
                handoff.kexec_systemd, self.registry, self.backend, self.settings.start, in_time
            )
            await self._stopped_by_systemd()
        else:
            handoff.kexec_direct(self.registry, self.backend, in_time)

    async def _stopped_by_systemd(self) -> None:
        """systemd accepted the kexec and will stop luod: wait for that (the cancel from
        the driver's shutdown ends this quietly). If it never comes, the kexec is abandoned."""
        self.handed_to_systemd = True
        timeout = self.settings.stop_timeout
        log.info("kexec-handed-to-systemd", timeout=timeout)
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            log.info("stopped-for-kexec", note="sessions are in systemd's fd store")
            return
        self.handed_to_systemd = False
        handoff.kexec_abandoned(self.registry)
        raise LuodError(
            "kexec-timeout",
            f"systemd did not stop luod within {timeout:g} s of systemctl kexec",
            "see `journalctl -b` for the kexec job; kexec.mode = direct avoids systemd",
        )
