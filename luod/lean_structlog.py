"""structlog's core without its package ``__init__``: what luod logs with, and no more, before
its first RECLAIM (issue 17 §2: structlog's dev renderer comes after it).

``import structlog`` imports ``structlog.dev`` (the console renderer, about 1,300 lines),
``structlog.stdlib`` (the logging bridge), ``threadlocal`` (with uuid and platform) and
``testing``; luod renders JSON lines through the package's configuration, processors and
native loggers (luod.daemon.logs). So the package is put in ``sys.modules`` with its
``__init__`` not run (luod.deferred), and only those modules are imported, then the public
names they hold are bound on the package as its ``__init__`` binds them. Anything else asked
of the package (``structlog.stdlib``, ``structlog.BoundLogger``...) runs its ``__init__``
first, so code written against the whole package works as usual, and anything imported
later (``from structlog.testing import capture_logs``) is imported as usual.

One module of the core, ``structlog._config``, takes three names from ``structlog.dev`` for the
defaults an unconfigured structlog uses (and makes its ConsoleRenderer then). While it
imports, a stand-in gives those names: they import the real ``structlog.dev`` the first time
they run, and do what it does. A structlog laid out otherwise is imported whole, as before.
About 5.5 ms on a host (bench/NOTES.md, Start-up).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

from luod.deferred import defer_init

PACKAGE = "structlog"
DEV = "structlog.dev"
PUBLIC = {
    "structlog._config": (
        "configure",
        "configure_once",
        "get_config",
        "get_logger",
        "getLogger",
        "is_configured",
        "reset_defaults",
        "wrap_logger",
    ),
    "structlog._native": ("make_filtering_bound_logger",),
    "structlog._output": (
        "BytesLogger",
        "BytesLoggerFactory",
        "PrintLogger",
        "PrintLoggerFactory",
        "WriteLogger",
        "WriteLoggerFactory",
    ),
    "structlog._base": ("BoundLoggerBase", "get_context"),
    "structlog.exceptions": ("DropEvent",),
}
"""The core's modules, each with the names the package's ``__init__`` takes from it."""
SUBMODULES = ("processors", "contextvars", "typing")
"""Imported too, and bound on the package by the import system: luod uses them by name."""


def import_core() -> None:
    """structlog's core (or the whole package: imported before, or laid out otherwise)."""
    package = defer_init(PACKAGE, complete_for_submodules=True)
    if package is None:
        importlib.import_module(PACKAGE)
        return
    try:
        _import_core(package)
    except (ImportError, AttributeError):  # another structlog: start again, whole
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        importlib.import_module(PACKAGE)


def _import_core(package: ModuleType) -> None:
    sys.modules[DEV] = _dev_stand_in()
    try:
        for name in (*PUBLIC, *(f"{PACKAGE}.{sub}" for sub in SUBMODULES)):
            importlib.import_module(name)
    finally:
        del sys.modules[DEV]
    for module, names in PUBLIC.items():
        for name in names:
            setattr(package, name, getattr(sys.modules[module], name))


def _dev_stand_in() -> ModuleType:
    """``structlog.dev`` as ``structlog._config`` imports it: its ConsoleRenderer and
    set_exc_info become the real ones the first time they run (the defaults of a structlog
    used unconfigured: never in luod, which configures it at start)."""
    stand_in = ModuleType(DEV)
    vars(stand_in).update(
        ConsoleRenderer=ConsoleRendererOnFirstUse,
        set_exc_info=set_exc_info,
        _has_colors=True,  # as structlog.dev has it on Linux
    )
    return stand_in


class ConsoleRendererOnFirstUse:
    """``structlog.dev.ConsoleRenderer(*args, **kwargs)``, made when it first renders."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._arguments = (args, kwargs)
        self._renderer: Any = None

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        if self._renderer is None:
            from structlog.dev import ConsoleRenderer

            args, kwargs = self._arguments
            self._renderer = ConsoleRenderer(*args, **kwargs)
        return self._renderer(logger, method_name, event_dict)


def set_exc_info(logger: Any, method_name: str, event_dict: Any) -> Any:
    """``structlog.dev.set_exc_info``, imported when it first runs."""
    from structlog.dev import set_exc_info as real

    return real(logger, method_name, event_dict)
