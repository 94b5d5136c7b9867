"""``python -m luod.rest.worker --link FD [--api-fd FD]``: luod's REST API, in a process of its
own, started and watched by luod (luod.rest.serving).

The HTTP stack (uvicorn, FastAPI, pydantic: about 35 MB and 0.3 s of CPU to import on a host)
lives here, not in the process that holds the guests' memory: luod's own RSS stays that of a
daemon that serves VMMs, a crash, a leak or a hang in the HTTP stack cannot reach a session, and
HTTP requests take no CPU from luod's event loop or its GIL while VMs freeze. The worker holds
no session fd and no kernel object: only its end of the link to luod (``--link``), the REST
socket systemd passed to luod (``--api-fd``, optional) and its standard streams; and first of
all it gives up every capability but CAP_CHOWN (luod.rest.privileges): no kexec, no reboot.

luod sends what to serve as the link's first frame (``hello``). The worker serves until luod
closes the link (luod stops or died) or it gets SIGTERM. Exit status: 0 after a stop; 78
(``EXIT_DISABLED``, EX_CONFIG) when its configuration is refused or its stack does not import,
said in a ``rest-disabled`` line: luod then leaves the API off instead of starting it again;
anything else is a failure luod answers with a new worker.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog

import luod.lean  # noqa: F401  # first, as in luod: structlog's core without rich (see there)
from luod.daemon import logs
from luod.errors import LuodError
from luod.rest import privileges
from luod.rest.link import EXIT_DISABLED

if TYPE_CHECKING:
    from luod.rest.link import LinkClient
    from luod.rest.remote import RemoteFacade

log = structlog.get_logger("luod.rest")


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure()
    link_fd, api_fd = _fds(list(sys.argv[1:] if argv is None else argv))
    try:
        privileges.drop()  # before any input is read (luod.rest.privileges)
    except OSError as exc:
        log.error(
            "rest-disabled",
            code="rest-privileges",
            message=f"the REST worker cannot give up its capabilities: {exc}",
            hint="the API stays off rather than serve HTTP with luod's capabilities",
        )
        return EXIT_DISABLED
    try:
        uvloop = import_stack()
    except ImportError as exc:  # a broken install costs the API, never the VMMs' sessions
        log.error(
            "rest-disabled",
            code="rest-import",
            message=f"the REST stack does not import: {exc}",
            hint="install luod's dependencies (fastapi, uvicorn, httptools, uvloop); "
            "the VMM socket is unaffected",
        )
        return EXIT_DISABLED
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(link_fd, api_fd))


def import_stack() -> ModuleType:
    """The HTTP stack, imported (ImportError if it cannot be); uvloop's module. asyncio is
    linked to ``ssl`` again where luod.lean left it without (TLS on the TCP listener)."""
    import uvloop

    from luod import lean
    from luod.rest import app, link, remote, serve

    lean.asyncio_tls()
    del app, link, remote, serve
    return uvloop


def _fds(argv: list[str]) -> tuple[int, int | None]:
    found: dict[str, int] = {}
    while argv:
        name, value = argv.pop(0), argv.pop(0) if argv else ""
        if name not in ("--link", "--api-fd") or not value.isdigit():
            raise SystemExit(f"usage: python -m luod.rest.worker --link FD [--api-fd FD] ({name})")
        found[name] = int(value)
    if "--link" not in found:
        raise SystemExit("usage: python -m luod.rest.worker --link FD [--api-fd FD]")
    return found["--link"], found.get("--api-fd")


async def _serve(link_fd: int, api_fd: int | None) -> int:
    from luod.rest import link

    reader, writer = await asyncio.open_unix_connection(
        sock=socket.socket(fileno=link_fd), limit=link.MAX_FRAME
    )
    first = await link.read_frame(reader)
    if first is None or not isinstance(first.get("hello"), dict):
        log.error("rest-worker-no-hello", code="rest-link", message="luod sent no hello")
        return 1
    hello: dict[str, Any] = first["hello"]
    client, facade = _linked(reader, writer, hello)
    serving = asyncio.create_task(_serve_rest(facade, hello["api"], api_fd))
    reading = asyncio.create_task(client.run())
    stopping = asyncio.create_task(_signalled())
    await asyncio.wait({serving, reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    return await _end(serving, reading, stopping)


def _linked(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: dict[str, Any]
) -> tuple[LinkClient, RemoteFacade]:
    """The worker's end of the link, and the facade over it, as luod's hello says."""
    from luod.core.access import AccessPolicy
    from luod.rest import metrics
    from luod.rest.link import LinkClient
    from luod.rest.remote import RemoteFacade

    logs.configure(str(hello.get("log_level", "info")))
    metrics.luod_is(int(hello["pid"]))
    access = hello.get("access", {})
    policy = AccessPolicy(frozenset(access.get("uids", [0])), frozenset(access.get("gids", [])))
    client = LinkClient(reader, writer, lambda *_: None)
    facade = RemoteFacade(client, policy, Path(hello["state_dir"]))
    client.on_event = facade.publish  # nothing is read before the caller runs the client
    return client, facade


async def _serve_rest(facade: RemoteFacade, api: dict[str, Any], api_fd: int | None) -> None:
    from luod.rest import app, serve

    await serve.serve_rest(
        app.create_app(facade),
        unix_path=Path(api["socket"]) if api.get("socket") else None,
        tcp=(str(api["tcp"][0]), int(api["tcp"][1])) if api.get("tcp") else None,
        token_file=_path(api.get("token_file")),
        tls_cert=_path(api.get("tls_cert")),
        tls_key=_path(api.get("tls_key")),
        unix_sock=socket.socket(fileno=api_fd) if api_fd is not None else None,
        public_metrics=bool(api.get("public_metrics", False)),
        max_body=int(api["max_body_bytes"]),
        max_connections=int(api["max_connections"]),
    )


async def _signalled() -> None:
    """Until SIGTERM or SIGINT (systemd stopping luod's unit signals the worker too)."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()


async def _end(serving: asyncio.Task[None], *others: asyncio.Task[Any]) -> int:
    """Stop serving (uvicorn's grace for open requests) and say how it ended."""
    for task in (serving, *others):
        task.cancel()
    results = await asyncio.gather(serving, *others, return_exceptions=True)
    failed = results[0]
    if isinstance(failed, LuodError):  # a configuration serve_rest refuses: said once
        log.error("rest-disabled", code=failed.code, message=failed.message, hint=failed.hint)
        return EXIT_DISABLED
    if isinstance(failed, Exception):
        log.error("rest-worker-failed", code="rest-failed", message=repr(failed), exc_info=failed)
        return 1
    return 0


def _path(value: Any) -> Path | None:
    return Path(str(value)) if value else None


if __name__ == "__main__":
    sys.exit(main())
