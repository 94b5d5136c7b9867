"""Backend: everything luod needs from a LUO kernel, over a real or a simulated platform
(luod.kernel.selection chooses which)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from luod.kernel import kexec
from luod.kernel.device import DEFAULT_PATH, LuoDevice
from luod.kernel.platform import KernelPlatform, Platform
from luod.kernel.probes import KernelInfo

if TYPE_CHECKING:
    from luod.kernel.images import HandoverBlobs


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

    def handover_blobs(self) -> HandoverBlobs:
        """The running kernel's outgoing KHO debugfs blobs (luod.kernel.images)."""
        return self.platform.handover_blobs()

    def running_image(self) -> Path | None:
        return self.platform.running_image()


def kernel_backend(device_path: str = DEFAULT_PATH) -> Backend:
    return Backend(KernelPlatform(), device_path)
