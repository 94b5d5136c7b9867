"""luod.kernel: the only code that touches /dev/liveupdate, kexec and reboot.

Use a :class:`Backend` — :func:`open_backend` for the running kernel or, when asked, the
in-process simulator (luod.kernel.sim, never imported by code that runs on a real host) — and
its ``device``. :class:`KernelGone` is what a kexec looks like to a caller that outlives it.
"""

from luod.kernel.backend import Backend, kernel_backend
from luod.kernel.device import LuoDevice, OpenDevice
from luod.kernel.errors import LuoError
from luod.kernel.fd import OwnedFd, SupportsFileno
from luod.kernel.platform import KernelGone
from luod.kernel.probes import KernelInfo
from luod.kernel.selection import open_backend
from luod.kernel.session import Session

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
