"""``Daemon``: luod's composition root. Every part of the process is built here, once, and
in the order a reboot needs: kernel backend → custody → recovery (sessions retrieved) → the
VMM socket serving → the REST API, when one is plugged in (``api``: luod.main plugs in
luod.rest.serving.serve_api; the daemon never imports the REST layer above it).

As uvicorn's ``Server``: ``run()`` is ``startup()`` (every part, wired), ``main_loop()`` (the
VMM socket bound and served until ``stop()``) and ``shutdown()`` (release what was opened).
Tests that want luod without sockets call ``startup()`` alone and talk to its ``handler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import grp
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

import luod
from luod.core import holds, statedir
from luod.core.clock import Clock, SystemClock
from luod.core.custodian import Custody
from luod.core.orchestrator import Phase
from luod.core.recovery import RecoveryReport, recover
from luod.core.registry import Registry
from luod.custody import sdnotify
from luod.custody.choose import choose_custody
from luod.daemon import nics, process_start, systemd, uplink_watch
from luod.daemon.connections import VmmConnections
from luod.daemon.events import EventBus
from luod.daemon.handler import LuodHandler
from luod.daemon.kexec_step import KexecSettings
from luod.daemon.qualification import QualificationDriver
from luod.daemon.qualification_qemu import CanarySettings
from luod.daemon.settings import ApiSettings, Settings
from luod.daemon.update import Spawn, UpdateDriver
from luod.kernel import Backend, open_backend
from luod.kernel.retriever import ChargedRetriever, ForkedProcess, Helper
from luod.vmm.server import VmmServer

if TYPE_CHECKING:
    from luod.custody.keeper_start import KeeperStart
    from luod.kernel.images import Declared

log = structlog.get_logger("luod")
ApiServer = Callable[
    [Registry, UpdateDriver, EventBus, ApiSettings, QualificationDriver],
    Coroutine[Any, Any, None],
]
"""Serves the REST API until cancelled: (registry, driver, events, settings, qualifications)."""
SOCKET_GROUP = "luod"
CUSTODY_CHECK_SECONDS = 2.0
REPLY_GRACE_SECONDS = 1.0
"""On stop: how long requests being answered may take to get their replies out."""
API_WAIT_AFTER_KEXEC = 5.0
API_WAIT_STARTS = 3.0
API_WAIT_CAP = 20.0
"""Right after a kexec the REST stack starts once the update has ended (every VM reclaimed and
DONE, or the reclaim deadline passed), at most API_WAIT_AFTER_KEXEC seconds after luod serves,
or API_WAIT_STARTS times luod's own start (exec to serving) where that is longer (on a slow
machine the VMMs take as long to start as luod), never more than API_WAIT_CAP: luoctl retries
for 30 s, and waits as long for a reply. Its import (FastAPI, pydantic, uvicorn: about 0.3 s of
CPU on a host, seconds under TCG) runs in a thread holding luod's GIL, while the VMMs restoring
their VMs (QEMU starting, its state loading) need the CPU and luod's answers: with 4 real QEMU
VMs it made each VM's RECLAIM -> DONE 0.4-0.6 s longer (bench/NOTES.md)."""
API_NIC_WAIT = 10.0
"""The REST start also waits for the VMs' NICs to be rebuilt, at most this long: its import
would share the GIL with the rebuild's, and take half of it."""


class Daemon:
    """One luod. ``backend``, ``custody``, ``clock`` and ``kexec`` replace what the settings
    would choose (tests: stand-ins for the fd store or systemctl); ``api`` serves the REST API
    that ``settings.api`` describes (without it, luod serves VMMs only); ``keeper``: the fd
    keeper's start that luod.start began before luod's imports, ``helper`` the kept retrieve
    helper's (the daemon owns both from here)."""

    def __init__(
        self,
        settings: Settings,
        *,
        backend: Backend | None = None,
        custody: Custody | None = None,
        clock: Clock | None = None,
        kexec: KexecSettings | None = None,
        api: ApiServer | None = None,
        keeper: KeeperStart | None = None,
        helper: Helper | None = None,
    ) -> None:
        self.settings = settings
        self._keeper_start = keeper
        self._helper_start = helper
        self._api = api
        self.clock = clock or SystemClock()
        self.started = self.clock.now()
        self._backend = backend
        self._custody = custody
        self._kexec = kexec
        self.retriever: ChargedRetriever | None = None  # on the real kernel (_retriever)
        self._stop = asyncio.Event()
        self.kernel_gone = False  # the kexec happened and luod outlived it (the simulator)
        self._opened = contextlib.ExitStack()  # what shutdown() releases, last opened first
        self._tasks: asyncio.TaskGroup | None = None  # run()'s: the update task runs in it

    # --- startup -------------------------------------------------------------------------------
    def startup(self, spawn: Spawn | None = None) -> None:
        """Build every part; on return VMM requests can be answered (``handler``). ``spawn``
        runs the update's task; by default in the task group of ``run()``."""
        self._recover()
        self._wire(spawn or self._spawn)

    def _recover(self) -> None:
        """The critical path after a reboot: backend, custody, the sessions taken back."""
        settings = self.settings
        if (starting := self._keeper_start) is not None:
            self._opened.callback(starting.close)  # reaped whatever happens (a no-op once used)
        if (helper := self._helper_start) is not None:
            self._opened.callback(helper.close)  # the same: a second close is a no-op
        self._claim_dirs()
        self.backend: Backend = (
            open_backend(
                settings.simulate,
                sim_cmdline=settings.sim_cmdline,
                sim_read_abi=_declared_abi,  # a kexec'd simulator is the image's kernel
            )
            if self._backend is None
            else self._backend
        )
        self.custody: Custody = (  # not `or`: an empty custody is falsy
            choose_custody(settings.runtime_dir, settings.custody, self._keeper_start)
            if self._custody is None
            else self._custody
        )
        self._opened.callback(self.custody.close)
        self.registry = Registry(
            self.backend,
            self.custody,
            settings.state_dir,
            settings.access,
            limits=settings.limits,
            retriever=self._retriever(),
        )
        self._opened.callback(self.registry.close_journal)
        holds.hold_blocking("recovery")
        self.report: RecoveryReport = recover(self.registry, self.backend, self.custody)

    def _retriever(self) -> ChargedRetriever | None:
        """On the real kernel, RECLAIMs from other cgroups go through a kept helper
        (luod.kernel.retriever); the simulator retrieves in place (Registry's default)."""
        if self.backend.name != "kernel":
            return None
        if (begun := self._helper_start) is not None:
            how = "forked" if isinstance(begun.process, ForkedProcess) else "spawned"
            log.info("retriever-begun", pid=begun.process.pid, note=f"{how} before luod's imports")
        retriever = self.retriever = ChargedRetriever(log, begun=begun)
        self._opened.callback(retriever.close)
        return retriever

    def _claim_dirs(self) -> None:
        """luod's directories, checked (luod.core.statedir), and the state directory locked
        before anything is touched: a second luod there stops here (``state-dir-locked``)."""
        statedir.prepare(self.settings.state_dir, statedir.STATE_DIR_MODE)
        self.state_lock = statedir.StateLock(self.settings.state_dir)
        self._opened.callback(self.state_lock.close)
        statedir.prepare(self.settings.runtime_dir, statedir.RUNTIME_DIR_MODE)
        for name in statedir.STATE_FILES:
            statedir.tighten(self.settings.state_dir / name)

    def _wire(self, spawn: Spawn) -> None:
        """The parts that answer requests, each given what it uses, once."""
        settings = self.settings
        self.connections = VmmConnections()
        self.events = EventBus()
        self.events.listen(systemd.on_event)  # the unit's STATUS= follows the update
        self.events.listen(self._retire_helper)
        self.driver = UpdateDriver(
            self.registry,
            self.backend,
            self.connections,
            self.events,
            self.clock,
            on_kexec=self._kernel_gone,
            spawn=spawn,
            kexec=self._kexec if self._kexec is not None else self._host_kexec(),
            deadlines=settings.deadlines,
            unload_on_abort=settings.unload_on_abort,
            running_image=settings.running_image,
            managed_bridges=settings.managed_bridges,
        )
        self._opened.callback(self.driver.log.close)
        self.nics = nics.Rebuilds(self.registry, settings.managed_bridges, settings.nic_wait)
        self.qualifications = QualificationDriver(
            self.registry, self.backend, self.custody, self.driver, self.events, spawn,
            canary=CanarySettings(
                settings.socket_path,
                settings.state_dir / "qcanary",
                settings.runtime_dir / "qcanary.qmp",
                settings.runtime_dir / "qcanary",
            ),
        )  # fmt: skip
        self.handler = LuodHandler(
            self.registry, self.driver, self.connections, self.events, self.nics,
            reserved=self.qualifications.reserved_id,
        )  # fmt: skip

    def _host_kexec(self) -> KexecSettings:
        custody = self.custody
        return KexecSettings(
            self.settings.kexec_mode,
            lambda: systemd.kexec_facts(custody.kind),
            systemd.start_kexec,
            self.settings.systemd_timeout,
        )

    def _retire_helper(self, event: dict[str, Any]) -> None:
        """An update ended: the kept retrieve helper leaves until a RECLAIM needs one again
        (luod.kernel.retriever). Off the loop: its exit is waited for."""
        if event.get("event") != "UPDATE_END" or self.retriever is None or self._tasks is None:
            return
        why = f"update {event.get('id')} ended ({event.get('outcome')})"
        self._tasks.create_task(_retired(self.retriever, why))

    def _spawn(self, update: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._tasks is not None, "an update starts only while run() serves"
        return self._tasks.create_task(update)

    def _bind(self) -> socket.socket:
        """The VMM socket: systemd's (socket activation), else bound here."""
        listener = systemd.activated_socket(sdnotify.VMM_SOCKET)
        if listener is None:
            listener = bind(self.settings.socket_path)
            self._opened.callback(_unlink, self.settings.socket_path)
        self._opened.callback(listener.close)
        return listener

    # --- main loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        """startup, main loop, shutdown. A failure to start (no custody, a kernel that lost
        the sessions, a bad activated socket) is raised as itself: luod.main reports
        it and exits."""
        try:
            self.startup()
            server = VmmServer(
                self._bind(),
                self.handler,
                self.settings.limits.connections_per_uid,
                deferred=self.handler.deferred,
            )
            async with asyncio.TaskGroup() as self._tasks:
                await self.main_loop(server)
        finally:
            self.shutdown()

    async def main_loop(self, server: VmmServer) -> None:
        """Serve VMMs (and the REST API) until ``stop()``; then abort an update that can be."""
        assert self._tasks is not None
        tasks = self._tasks
        log.info(
            "serving",
            socket=str(self.settings.socket_path),
            backend=self.backend.name,
            custody=self.custody.kind,
            recovery=self.report.mode,
            vms=len(self.registry.vms),
            version=luod.__version__,
        )
        self._handle_signals()
        background = [tasks.create_task(server.serve()), tasks.create_task(self._custody_watch())]
        systemd.ready(f"serving {len(self.registry.vms)} VMs ({self.report.mode})")
        gc.freeze()  # the start-up heap lives as long as luod: later collections skip it
        gc.enable()  # off while luod started (luod.start)
        if (interval := systemd.watchdog_interval()) is not None:
            background.append(tasks.create_task(systemd.watchdog(interval)))
        after_kexec = self.report.mode == "after-kexec"
        reclaiming = self.driver.resume_interrupted(after_kexec, self.started)  # a killed luod's
        if after_kexec:
            self.driver.resume_after_kexec(self.started)
        self.nics.start(self.driver.vm_step)  # VMs back from a kexec with NICs: none, no import
        if self.settings.api is not None and self._api is not None:
            background.append(tasks.create_task(self._serve_api(after_kexec)))
        self.qualifications.resume(after_kexec)  # after the update's: its record is reopened
        if after_kexec or reclaiming:
            background.append(tasks.create_task(self._reclaim_grace()))
        if after_kexec and self.backend.name == "kernel":  # a simulated kexec kept the link
            background.append(tasks.create_task(uplink_watch.watch(self.driver.log)))
        await self._stop.wait()
        systemd.stopping()
        self.driver.shutdown()  # an update before the freeze is aborted: VMMs resume
        self.events.stopping()  # the REST event streams end now, not at uvicorn's grace
        if not self.kernel_gone:  # after a kexec nothing answers (the simulator's neither)
            await server.drain(REPLY_GRACE_SECONDS)  # an ABORT that ended an update: replied
        for task in background:
            task.cancel()
        self.nics.close()

    def stop(self) -> None:
        self._stop.set()

    async def _custody_watch(self) -> None:
        """Every few seconds: is the custodian there? A keeper that died is replaced and
        given every session again (luod.core.custody_guard), before the kexec needs it."""
        while True:
            await asyncio.sleep(CUSTODY_CHECK_SECONDS)
            async with self.handler.lock:  # never in the middle of a registry call
                await asyncio.to_thread(self.registry.check_custody)

    def _kernel_gone(self) -> None:
        self.kernel_gone = True
        self.stop()

    async def _serve_api(self, after_kexec: bool) -> None:
        """The REST API (see API_WAIT_AFTER_KEXEC for when it starts after a kexec)."""
        assert self.settings.api is not None and self._api is not None
        if after_kexec:
            await self._until_reclaimed(api_wait_after_kexec())
        if self._stop.is_set():
            return  # luod stops: no REST stack to import and stop again
        await self._api(
            self.registry, self.driver, self.events, self.settings.api, self.qualifications
        )

    async def _until_reclaimed(self, bound: float) -> None:
        """Until the VMs' NICs are rebuilt (at most API_NIC_WAIT) and the update that crossed
        the kexec has ended (at most ``bound`` seconds from now). luod stopping meanwhile
        cancels this task, and so the REST start: ``asyncio.timeout``, not ``wait_for``, which
        in Python 3.11 can swallow a cancellation that comes with the event."""
        loop = asyncio.get_running_loop()
        ended, began = self._update_ended(), loop.time()
        await self.nics.settled(API_NIC_WAIT)
        if self.driver.machine.phase is Phase.RECLAIMING:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(began + bound):
                    await ended.wait()

    def _update_ended(self) -> asyncio.Event:
        """Set when the running update ends; listening from now on."""
        ended = asyncio.Event()

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "UPDATE_END":
                ended.set()

        self.events.listen(on_event)
        return ended

    async def _reclaim_grace(self) -> None:
        grace = self.driver.machine.remaining()
        if grace is not None:
            await asyncio.sleep(grace)
            self.driver.reclaim_deadline_passed()

    def _handle_signals(self) -> None:
        """SIGTERM/SIGINT stop luod, except while freezing/frozen/rebooting: then the stop waits
        until the update has left those phases (never a half-done update). After systemctl
        kexec the stop is systemd's shutdown and goes ahead (UpdateDriver.defers_signals)."""
        loop = asyncio.get_running_loop()

        def requested(signum: int, logged: bool = False) -> None:
            if self.driver.defers_signals:
                if not logged:  # once per signal; then checked again silently every 0.1 s
                    log.warning(
                        "signal-deferred",
                        signal=signal.Signals(signum).name,
                        phase=str(self.driver.machine.phase),
                    )
                loop.call_later(0.1, requested, signum, True)
                return
            self.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, requested, signum)

    # --- shutdown ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Release what this process opened: the VMM socket (its path too, unless systemd
        owns it) and custody's local resources (what custody holds outside luod stays held)."""
        self._opened.close()
        log.info("stopped")


async def _retired(retriever: ChargedRetriever, why: str) -> None:
    try:
        await asyncio.to_thread(retriever.retire, why)
    except Exception as exc:  # the helper's exit is not worth luod's task group
        log.warning("retriever-retire-failed", error=repr(exc))


def api_wait_after_kexec() -> float:
    """How long the REST start may wait for the update's end, from now (luod serving)."""
    started = process_start.since_boot()
    own = time.clock_gettime(time.CLOCK_BOOTTIME) - started if started is not None else 0.0
    return min(max(API_WAIT_AFTER_KEXEC, API_WAIT_STARTS * own), API_WAIT_CAP)


def _declared_abi(image: Path) -> Declared | None:
    """What a kexec'd image declares (the simulator boots as that kernel). The handover-ABI
    readers (luod.core.compat: bz2, lzma, the image parsers) are imported here, not at start-up:
    after a real kexec nothing calls this, and the first RECLAIM does not wait for them."""
    from luod.core import compat

    return compat.CACHE.declared(image)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def bind(path: Path, group: str = SOCKET_GROUP) -> socket.socket:
    """Listen on ``path`` (mode 0660, group ``luod`` when it exists); it appears only once it
    accepts (bound aside, then renamed)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(staging))
    os.chmod(staging, 0o660)
    with contextlib.suppress(KeyError):  # group luod when it exists (as luod.socket does)
        os.chown(staging, -1, grp.getgrnam(group).gr_gid)
    listener.listen(socket.SOMAXCONN)  # as luod.socket's default: every VMM reconnects at once
    os.replace(staging, path)
    return listener
