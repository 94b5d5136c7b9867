"""luod.kernel: the only code that touches /dev/liveupdate, kexec and reboot.

Use a :class:`Backend` — :func:`kernel_backend` for the running kernel, or
:func:`luod.kernel.sim.sim_backend` for the in-process simulator — and its ``device``.
"""

from luod.kernel.backend import Backend, kernel_backend
from luod.kernel.device import LuoDevice, OpenDevice
from luod.kernel.errors import LuoError
from luod.kernel.fd import OwnedFd, SupportsFileno
from luod.kernel.probes import KernelInfo
from luod.kernel.session import Session

__all__ = [
    "Backend",
    "KernelInfo",
    "LuoDevice",
    "LuoError",
    "OpenDevice",
    "OwnedFd",
    "Session",
    "SupportsFileno",
    "kernel_backend",
]
