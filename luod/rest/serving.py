"""The REST API of a running luod: a worker process (luod.rest.worker), started once the VMM
socket serves, over a link to luod's main event loop (luod.rest.link).

luod's side imports no part of the HTTP stack: the worker imports FastAPI, uvicorn and pydantic
and serves; luod answers its calls with luod.rest.port.DaemonPort and sends it every update
event. Right after a kexec the daemon starts this only once the update has ended (every VM
reclaimed and done) or after a bound (luod.daemon.daemon.API_WAIT_AFTER_KEXEC): the worker's
start is CPU that belongs to the VMMs restoring their VMs.

luod watches its worker. One that exits on its own (a crash, a kill) is started again, after
``RESTART_FIRST`` seconds, doubling to ``RESTART_MAX`` while it keeps failing within
``STABLE_SECONDS``; one that says its configuration or its stack is unusable (exit 78) is not:
it said why in a ``rest-disabled`` line, and luod goes on serving VMMs. When luod stops it
closes the link: the worker stops serving (uvicorn's grace for open requests) and exits, or is
killed after ``STOP_LIMIT``. The REST layer sits above the daemon; the daemon gets
``serve_api`` plugged in by luod.main.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from luod import childenv
from luod.core.access import AccessPolicy
from luod.core.registry import Registry
from luod.daemon import logs, systemd
from luod.daemon.events import EventBus
from luod.daemon.qualification import QualificationDriver
from luod.daemon.settings import ApiSettings
from luod.daemon.update import UpdateDriver
from luod.errors import LuodError

if TYPE_CHECKING:  # imported once serve_api runs: not on the path to the first RECLAIM
    from luod.rest.link import LinkServer, Port

log = structlog.get_logger("luod")
RESTART_FIRST: Final = 1.0
RESTART_MAX: Final = 60.0
STABLE_SECONDS: Final = 60.0
STOP_LIMIT: Final = 5.0
"""uvicorn's grace period is one second; past this the worker is killed."""


async def serve_api(
    registry: Registry,
    driver: UpdateDriver,
    events: EventBus,
    settings: ApiSettings,
    qualifications: QualificationDriver | None = None,
) -> None:
    """Serve until cancelled (which stops the worker and waits for it). A REST API that cannot
    serve costs the API only: luod keeps serving VMMs, and says why."""
    try:
        activated = systemd.activated_socket("api")
    except LuodError as exc:
        log.error("rest-disabled", code=exc.code, message=exc.message, hint=exc.hint)
        return
    from luod.rest.port import DaemonPort

    port = DaemonPort(registry, driver, qualifications)
    worker = Worker(port, hello(settings, registry.state_dir, registry.access))
    events.listen(worker.event)
    try:
        await worker.supervise(activated)
    finally:
        if activated is not None:
            activated.close()


def hello(settings: ApiSettings, state_dir: Path, access: AccessPolicy) -> dict[str, Any]:
    """What the worker serves (the link's first frame): where, the state directory whose
    history it reads, and who sees what."""
    api = settings._asdict()
    for name in ("socket", "token_file", "tls_cert", "tls_key"):
        api[name] = None if api[name] is None else str(api[name])
    return {
        "api": api,
        "state_dir": str(state_dir),
        "access": {"uids": sorted(access.uids), "gids": sorted(access.gids)},
        "log_level": logs.level(),
        "pid": os.getpid(),  # /metrics reports luod's process, not the worker's
    }


class Worker:
    def __init__(self, port: Port, hello: dict[str, Any]) -> None:
        self.port = port
        self.hello = hello
        self._server: LinkServer | None = None
        self.started = 0  # workers started so far

    def event(self, event: dict[str, Any]) -> None:
        """A listener on luod's event bus: to the running worker, if any."""
        if self._server is not None:
            self._server.event(event)

    async def supervise(self, activated: socket.socket | None) -> None:
        from luod.rest.link import EXIT_DISABLED

        loop = asyncio.get_running_loop()
        backoff = RESTART_FIRST
        while True:
            began = loop.time()
            try:
                status = await self.run_once(activated)
            except Exception as exc:  # no worker (EMFILE, ENOMEM...): luod goes on, tries again
                log.error("rest-worker-failed", code="rest-failed", message=repr(exc), exc_info=exc)
                status = -1
            if status == EXIT_DISABLED:
                return  # the worker said why (rest-disabled)
            if loop.time() - began >= STABLE_SECONDS:
                backoff = RESTART_FIRST
            log.error(
                "rest-worker-exited",
                code="rest-worker",
                status=status,
                restart_in=backoff,
                hint="the REST API is back once a new worker serves; the VMM socket is "
                "unaffected (see the worker's lines before this one)",
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX)

    async def run_once(self, activated: socket.socket | None) -> int:
        """One worker, from its start to its exit: its exit status (negative: a signal)."""
        from luod.rest import link
        from luod.rest.port import CALLS

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-m", "luod.rest.worker", "--link", str(theirs.fileno())]
        passed = [theirs.fileno()]
        if activated is not None:
            command += ["--api-fd", str(activated.fileno())]
            passed.append(activated.fileno())
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                pass_fds=passed,
                stdin=asyncio.subprocess.DEVNULL,
                env=childenv.child_env(),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.started += 1
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=link.MAX_FRAME)
        server = link.LinkServer(writer, self.port, CALLS)
        server.hello(self.hello)
        self._server = server
        linked = asyncio.create_task(server.serve(reader))
        exited = asyncio.create_task(process.wait())
        try:
            await asyncio.wait({linked, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._server = None
            writer.close()  # EOF: the worker stops serving and exits
            linked.cancel()
            with contextlib.suppress(BaseException):
                await linked
            await _reap(process, exited)
        if linked.done() and not linked.cancelled() and linked.exception() is not None:
            log.error("rest-link-broken", message=str(linked.exception()))
        return process.returncode if process.returncode is not None else -1


async def _reap(process: asyncio.subprocess.Process, exited: asyncio.Task[int]) -> None:
    """Wait for the worker's exit after the link closed; kill it past STOP_LIMIT. Shielded: a
    luod that stops while this waits still leaves no worker behind."""

    async def reap() -> None:
        try:
            async with asyncio.timeout(STOP_LIMIT):
                await asyncio.shield(exited)
        except TimeoutError:
            log.error("rest-worker-killed", pid=process.pid, after=STOP_LIMIT)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await exited

    await asyncio.shield(asyncio.ensure_future(reap()))
