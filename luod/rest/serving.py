"""The REST API of a running luod: imported and started once the VMM socket serves.

FastAPI and uvicorn are imported in a worker thread, so that the event loop keeps serving VMMs
meanwhile; right after a kexec the daemon starts this only once the update has ended (every VM
reclaimed and done) or after a bound (luod.daemon.daemon.API_WAIT_AFTER_KEXEC): that CPU
belongs to the VMMs restoring their VMs. uvicorn then serves from a thread and event loop of
its own (luod.rest.thread), reading snapshots of luod's state and marshalling mutations to
luod's loop (luod.rest.bridge): API traffic never queues in front of a VMM. The REST layer sits
above the daemon and reaches it only through ``DaemonFacade`` (luod.rest.adapter), which
implements luod.rest.facade.RestFacade; the daemon gets ``serve_api`` plugged in by luod.main.
"""

from __future__ import annotations

import asyncio

import structlog

from luod.core.registry import Registry
from luod.daemon import systemd
from luod.daemon.events import EventBus
from luod.daemon.qualification import QualificationDriver
from luod.daemon.settings import ApiSettings
from luod.daemon.update import UpdateDriver
from luod.errors import LuodError

log = structlog.get_logger("luod")


async def serve_api(
    registry: Registry,
    driver: UpdateDriver,
    events: EventBus,
    settings: ApiSettings,
    qualifications: QualificationDriver | None = None,
) -> None:
    """Serve until cancelled (which stops the REST thread and waits for it). A REST stack that
    does not import or fails costs the API only: luod keeps serving VMMs, and says why."""
    activated = systemd.activated_socket("api")
    try:
        await asyncio.to_thread(_import_rest)
    except ImportError as exc:  # a broken install costs the API, never the VMMs' sessions
        log.error(
            "rest-disabled",
            code="rest-import",
            message=f"the REST stack does not import: {exc}",
            hint="install luod's dependencies (fastapi, uvicorn, httptools, uvloop); "
            "the VMM socket is unaffected",
        )
        return
    from luod.rest import app, bridge, serve, thread
    from luod.rest.adapter import DaemonFacade  # loaded by _import_rest: no cost here

    facade = DaemonFacade(registry, driver, qualifications)
    over = bridge.LoopBridge(facade, asyncio.get_running_loop())
    events.listen(over.changed)  # the REST thread's snapshots are stale
    events.listen(facade.publish)  # then the event stream (SSE)

    async def serving() -> None:  # in the REST thread, building the app too
        await serve.serve_rest(
            app.create_app(over),
            unix_path=settings.socket,
            tcp=settings.tcp,
            token_file=settings.token_file,
            tls_cert=settings.tls_cert,
            tls_key=settings.tls_key,
            unix_sock=activated,
            public_metrics=settings.public_metrics,
            max_body=settings.max_body_bytes,
            max_connections=settings.max_connections,
        )

    try:
        await thread.serve_in_thread(serving)
    except LuodError as exc:  # luod keeps serving VMMs; the operator sees why REST is off
        log.error("rest-disabled", code=exc.code, message=exc.message, hint=exc.hint)
    except Exception as exc:  # a REST bug must not take the TaskGroup (and luod) down
        log.exception("rest-disabled", code="rest-failed", message=str(exc))


def _import_rest() -> None:
    """Load the REST stack (about 0.3 s of CPU) in a worker thread; serve_api then finds it in
    ``sys.modules``. uvicorn imports ``ssl``: asyncio gets it back too (luod.lean)."""
    from luod import lean
    from luod.rest import adapter, app, bridge, serve, thread

    lean.asyncio_tls()
    del adapter, app, bridge, serve, thread
