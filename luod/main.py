"""``luod``: the daemon entry point. The only place that turns errors into exit codes.

Runs a ``Daemon`` (luod.daemon.daemon, the composition root) with the settings that
luod.daemon.command_line resolved from the command line and /etc/luod/luod.toml, and the REST
API plugged in (luod.rest.serving.serve_api). This module sits above every layer; importing it
costs no part of the REST stack (FastAPI, uvicorn): serve_api starts the REST worker, the
process that imports those, once the VMM socket serves.
"""

from __future__ import annotations

import luod.lean  # noqa: F401  # first: structlog and asyncio, without rich and ssl (see there)

# isort: split
import asyncio
import sys
from typing import TYPE_CHECKING

from luod.daemon import logs
from luod.daemon.command_line import (  # the command line's names, as luod.main has them
    DEFAULTS,
    EXIT_FAILURE,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    Resolved,
    parse_args,
    parser,
    resolve,
)
from luod.daemon.daemon import Daemon
from luod.errors import LuodError
from luod.kernel import fdtable
from luod.rest.serving import serve_api

if TYPE_CHECKING:
    from luod.custody.keeper_start import KeeperStart
    from luod.kernel.retriever import Helper

__all__ = [
    "DEFAULTS",
    "EXIT_FAILURE",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
    "parse_args",
    "parser",
    "serve",
]
log = logs.get_logger()


def main(argv: list[str] | None = None) -> int:
    resolved = resolve(argv)
    return resolved if isinstance(resolved, int) else serve(resolved)


def serve(
    resolved: Resolved, keeper: KeeperStart | None = None, helper: Helper | None = None
) -> int:
    """Run luod until it stops; its exit status. ``keeper``: the fd keeper's start, begun by
    luod.start before these imports (the daemon's custody awaits it); ``helper``: the kept
    retrieve helper's, begun there too (the daemon's retriever adopts it)."""
    logs.configure(resolved.log_level)
    fdtable.raise_limit()  # 1024 fds hold ~300 VMs; the kernel carries 1000 and more
    fdtable.reserve()  # while luod has one thread (luod.kernel.fdtable)
    try:
        daemon = Daemon(resolved.settings, api=serve_api, keeper=keeper, helper=helper)
        asyncio.run(daemon.run())
    except LuodError as exc:
        log.error("fatal", code=exc.code, message=exc.message, hint=exc.hint)
        print(f"luod: {exc}", file=sys.stderr)
        return EXIT_LOCKED if exc.code == "state-dir-locked" else EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
