"""What the ``luod`` command leaves out of its start-up (imported first, by luod.main).

structlog's package imports ``structlog.dev`` and ``structlog.tracebacks``, which import
``rich`` (its console, pretty printer and traceback renderer: about 45 ms on a host, far more
under TCG) whenever it is installed. luod renders JSON lines (luod.daemon.logs) and never uses
rich, so structlog is imported here with ``rich`` hidden (a ``None`` in ``sys.modules`` makes
its import fail as if absent, which structlog handles). Nothing else changes: a later
``import rich`` in this process works as usual. Measured in bench/startup.py.
"""

from __future__ import annotations

import importlib
import sys


def import_structlog() -> None:
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("structlog")
    finally:
        del sys.modules["rich"]


import_structlog()
