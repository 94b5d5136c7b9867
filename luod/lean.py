"""What the ``luod`` command leaves out of its start-up (imported first, by luod.main).

structlog comes as its core alone (luod.lean_structlog): its package ``__init__`` imports the
dev renderer and the stdlib and Twisted bridges, which luod does not use before it serves.
``structlog.tracebacks``, which the core's processors import, imports ``rich`` (its console,
pretty printer and traceback renderer: about 45 ms on a host, far more under TCG) whenever it
is installed. luod renders JSON lines (luod.daemon.logs) and never uses rich, so structlog is
imported here with ``rich`` hidden (a ``None`` in ``sys.modules`` makes its import fail as if
absent, which structlog handles). Nothing else changes: a later ``import rich`` in this process
works as usual. Measured in bench/startup.py.

structlog also imports asyncio, whose event loop and SSL protocol modules import ``ssl``: with
OpenSSL's libraries, about 6 ms and 6 MB on a host, 0.1-0.3 s of ``import asyncio`` in the TCG
test guest (bench/NOTES.md, Start-up), and luod's event loop serves unix sockets only. So
``ssl`` is hidden too while asyncio is imported; its modules then hold ``ssl = None``, as on a
Python built without it.
``asyncio_tls()`` links them to ``ssl`` again: the REST stack calls it before it serves (its
TLS runs on uvloop, which imports ``ssl`` itself, but nothing in luod's process is left with
an asyncio that cannot do TLS once that stack is up).
"""

from __future__ import annotations

import importlib
import sys

from luod import lean_structlog

_HIDDEN = ("rich", "ssl")
_SSL_USERS = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")


def import_structlog() -> None:
    if "structlog" in sys.modules:
        return
    hidden = [name for name in _HIDDEN if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        lean_structlog.import_core()
        importlib.import_module("asyncio")
    finally:
        for name in hidden:
            del sys.modules[name]


def asyncio_tls() -> None:
    """asyncio's modules linked to ``ssl`` (imported now) where import_structlog left them
    without it, as they link themselves when ``ssl`` imports; idempotent."""
    import ssl

    for name in _SSL_USERS:
        module = sys.modules.get(name)
        if module is not None and vars(module).get("ssl", ssl) is None:
            module.ssl = ssl  # type: ignore[attr-defined]
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and not hasattr(sslproto, "SSLAgainErrors"):
        sslproto.SSLAgainErrors = (ssl.SSLWantReadError, ssl.SSLSyscallError)  # type: ignore[attr-defined]


import_structlog()
