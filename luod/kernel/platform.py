"""Platform: the narrow waist between luod's kernel objects and what executes them.

``KernelPlatform`` issues real syscalls; ``luod.kernel.sim.SimPlatform`` executes the same
calls against an in-process model of docs/kernel.md §10.1. Device, session and kexec code above this
line is shared, so the contract tests exercise the same code on both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from luod.kernel import libc, probes
from luod.kernel.fd import OwnedFd
from luod.kernel.probes import Holder, KernelInfo

if TYPE_CHECKING:  # the image readers: an update's (luod.kernel.images), not luod's start
    from luod.kernel.images import HandoverBlobs


class KernelGone(BaseException):
    """This kernel has kexec'd: it is gone, and so is everything it held.

    On a real kernel ``reboot_kexec`` never returns when the kexec happens. A platform whose
    caller outlives the kexec (the simulator) raises this instead, from ``reboot_kexec`` and
    from every LUO call after it: the caller must stop as if the machine had rebooted.
    A BaseException, so that no ``except Exception`` on the way can mistake it for a failure.
    """


class Platform(Protocol):
    name: str

    def open_device(self, path: str) -> OwnedFd: ...

    def ioctl(self, fd: int, cmd: int, buf: Any) -> None: ...

    def kexec_file_load(self, kernel: OwnedFd, initrd: OwnedFd | None, cmdline: bytes) -> None: ...

    def kexec_unload(self) -> None: ...

    def kexec_loaded(self) -> bool: ...

    def reboot_kexec(self) -> None:
        """reboot(LINUX_REBOOT_CMD_KEXEC): never returns on success, or raises KernelGone."""
        ...

    def device_holders(self, path: str) -> list[Holder]: ...

    def info(self) -> KernelInfo: ...

    def handover_blobs(self) -> HandoverBlobs: ...

    def running_image(self) -> Path | None: ...


class KernelPlatform:
    """The running Linux kernel."""

    name = "kernel"

    def __init__(self, roots: probes.Roots = probes.DEFAULT_ROOTS) -> None:
        self.roots = roots

    def open_device(self, path: str) -> OwnedFd:
        return OwnedFd(os.open(path, os.O_RDWR | os.O_CLOEXEC))

    def ioctl(self, fd: int, cmd: int, buf: Any) -> None:
        libc.ioctl(fd, cmd, buf)

    def kexec_file_load(self, kernel: OwnedFd, initrd: OwnedFd | None, cmdline: bytes) -> None:
        flags = 0 if initrd is not None else libc.KEXEC_FILE_NO_INITRAMFS
        initrd_fd = initrd.fileno() if initrd is not None else -1
        libc.kexec_file_load(kernel.fileno(), initrd_fd, cmdline, flags)

    def kexec_unload(self) -> None:
        libc.kexec_file_unload()

    def kexec_loaded(self) -> bool:
        path = Path(self.roots.sys) / "kernel/kexec_loaded"
        try:
            return path.read_text().strip() == "1"
        except OSError:
            return False

    def reboot_kexec(self) -> None:
        libc.reboot_kexec()

    def device_holders(self, path: str) -> list[Holder]:
        return probes.device_holders(path, self.roots.proc)

    def info(self) -> KernelInfo:
        return probes.probe(self.roots)

    def handover_blobs(self) -> HandoverBlobs:
        from luod.kernel import images

        return images.read_handover_blobs(self.roots.sys)

    def running_image(self) -> Path | None:
        """Where Debian installs the running kernel's image (luod's kexec.running_image
        overrides it)."""
        from luod.kernel import images

        release = (self.roots.proc / "sys/kernel/osrelease").read_text().strip()
        return images.installed_image(release)
