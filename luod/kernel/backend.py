"""Backend: everything luod needs from a LUO kernel, over a real or a simulated platform.

``open_backend`` chooses: the running kernel, or the in-process simulator (luod.kernel.sim),
which is imported there and only when asked for, so that nothing on a real host loads it.
"""

from __future__ import annotations

from pathlib import Path

from luod.kernel import kexec
from luod.kernel.device import DEFAULT_PATH, LuoDevice
from luod.kernel.platform import KernelPlatform, Platform
from luod.kernel.probes import KernelInfo


class Backend:
    def __init__(self, platform: Platform, device_path: str = DEFAULT_PATH) -> None:
        self.platform = platform
        self.device = LuoDevice(platform, device_path)

    @property
    def name(self) -> str:
        return self.platform.name

    def load_kernel(self, kernel: Path, initrd: Path | None = None, cmdline: str = "") -> None:
        kexec.load(self.platform, kernel, initrd, cmdline)

    def unload_kernel(self) -> None:
        kexec.unload(self.platform)

    def kernel_loaded(self) -> bool:
        return self.platform.kexec_loaded()

    def reboot_kexec(self) -> None:
        """Into the loaded kernel. Never returns when it happens (raises KernelGone where the
        caller outlives it: the simulator); raises LuoError when the kernel refused or rolled
        the freeze back."""
        kexec.reboot(self.platform)

    def info(self) -> KernelInfo:
        return self.platform.info()


def kernel_backend(device_path: str = DEFAULT_PATH) -> Backend:
    return Backend(KernelPlatform(), device_path)


def open_backend(simulate: Path | None = None, *, sim_cmdline: str | None = None) -> Backend:
    """The running kernel's LUO; with ``simulate`` (a state directory), the simulator's, whose
    sessions live in that directory across simulated kexecs (``sim_cmdline``: the simulated
    boot's command line). The simulator releases what a closed fd held at once, as the kernel
    does, since luod runs on it for as long as a real host would."""
    if simulate is None:
        return kernel_backend()
    from luod.kernel.sim import sim_backend  # here only: never loaded on a real host

    return sim_backend(simulate, cmdline=sim_cmdline, eager_release=True)
