"""luod.kernel: the only code that touches /dev/liveupdate, kexec and reboot.

Use a :class:`Backend` — :func:`open_backend` for the running kernel or, when asked, the
in-process simulator (luod.kernel.sim, never imported by code that runs on a real host) — and
its ``device``. :class:`KernelGone` is what a kexec looks like to a caller that outlives it.

The names below load on first use (PEP 562): a VMM that imports ``luod.kernel.fd`` for
``OwnedFd`` (through luod.vmm.client) does not pay for the backend, the probes and kexec,
which luod's own start-up needs and a VMM's reconnect after a kexec does not.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from luod.kernel.backend import Backend, kernel_backend
    from luod.kernel.device import LuoDevice, OpenDevice
    from luod.kernel.errors import LuoError
    from luod.kernel.fd import OwnedFd, SupportsFileno
    from luod.kernel.platform import KernelGone
    from luod.kernel.probes import KernelInfo
    from luod.kernel.selection import open_backend
    from luod.kernel.session import Session

_HOME: Final = {
    "Backend": "backend",
    "kernel_backend": "backend",
    "LuoDevice": "device",
    "OpenDevice": "device",
    "LuoError": "errors",
    "OwnedFd": "fd",
    "SupportsFileno": "fd",
    "KernelGone": "platform",
    "KernelInfo": "probes",
    "open_backend": "selection",
    "Session": "session",
}

__all__ = [
    "Backend",
    "KernelGone",
    "KernelInfo",
    "LuoDevice",
    "LuoError",
    "OpenDevice",
    "OwnedFd",
    "Session",
    "SupportsFileno",
    "kernel_backend",
    "open_backend",
]


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once: later lookups find it without this function
    return value
