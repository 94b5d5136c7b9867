"""Which LUO backend luod runs on: the running kernel, or the in-process simulator
(luod.kernel.sim), imported here and only when asked for, so that nothing on a real host
loads it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from luod.kernel.backend import Backend, kernel_backend

if TYPE_CHECKING:
    from luod.kernel.images import Declared


def open_backend(
    simulate: Path | None = None,
    *,
    sim_cmdline: str | None = None,
    sim_read_abi: Callable[[Path], Declared | None] | None = None,
) -> Backend:
    """The running kernel's LUO; with ``simulate`` (a state directory), the simulator's, whose
    sessions live in that directory across simulated kexecs (``sim_cmdline``: the simulated
    boot's command line; ``sim_read_abi``: what a kexec'd image declares, so the next boot is
    that kernel). The simulator releases what a closed fd held at once, as the kernel does,
    since luod runs on it for as long as a real host would."""
    if simulate is None:
        return kernel_backend()
    from luod.kernel.sim import sim_backend  # here only: never loaded on a real host

    return sim_backend(simulate, cmdline=sim_cmdline, eager_release=True, read_abi=sim_read_abi)
