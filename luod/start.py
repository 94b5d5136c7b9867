"""The ``luod`` command's entry point (and ``python -m luod``): luod starts with the garbage
collector off.

Everything luod allocates while it starts (its modules, classes, settings, the sessions taken
back after a kexec) lives as long as luod: the collector would scan it again and again for
nothing, 8–10 ms before the first RECLAIM on a host and many times that under TCG (issue 17,
bench/NOTES.md "Start-up"). luod.daemon.daemon freezes that heap (``gc.freeze()``) once it
serves, and turns the collector on again there.
"""

from __future__ import annotations

import gc
import sys


def entry() -> None:
    gc.disable()
    from luod.main import main  # every module luod needs, imported with the collector off

    sys.exit(main())
