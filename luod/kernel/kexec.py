"""Loading the next kernel and jumping into it (docs/kernel.md §5.2, §7).

Only ``kexec_file_load`` exists here: plain ``kexec_load`` is accepted by the kernel but carries
no KHO data, so every session would be silently dropped (docs/kernel.md §7.1). There is no path to
it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from luod.kernel.errors import LuoError
from luod.kernel.fd import OwnedFd

if TYPE_CHECKING:
    from luod.kernel.platform import Platform


def load(platform: Platform, kernel: Path, initrd: Path | None, cmdline: str) -> None:
    """kexec_file_load ``kernel`` (+ ``initrd``) with ``cmdline``."""
    raw = cmdline.encode()
    if b"\0" in raw:
        raise LuoError(errno.EINVAL, "kexec_file_load", detail="NUL byte in the command line")
    with _open_image(kernel) as kernel_fd:
        initrd_fd = _open_image(initrd) if initrd is not None else None
        try:
            platform.kexec_file_load(kernel_fd, initrd_fd, raw)
        except OSError as exc:
            raise LuoError(exc.errno or errno.EIO, "kexec_file_load", detail=str(kernel)) from exc
        finally:
            if initrd_fd is not None:
                initrd_fd.close()


def unload(platform: Platform) -> None:
    try:
        platform.kexec_unload()
    except OSError as exc:
        raise LuoError(exc.errno or errno.EIO, "kexec_file_load", detail="unload") from exc


def reboot(platform: Platform) -> None:
    """reboot(LINUX_REBOOT_CMD_KEXEC). Returns only by raising.

    No LUO ioctl may run concurrently: after serialization they block for ever
    (docs/kernel.md §5.3). Any errno other than EINVAL/EPERM/EBUSY is a LUO freeze failure the
    kernel rolled back.
    """
    try:
        platform.reboot_kexec()
    except OSError as exc:
        raise LuoError(exc.errno or errno.EIO, "reboot") from exc


def _open_image(path: Path) -> OwnedFd:
    try:
        return OwnedFd(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        raise LuoError(
            exc.errno or errno.EIO,
            "kexec_file_load",
            detail=f"cannot open {path}",
            hint="the next kernel image (and initrd) must exist and be readable",
        ) from exc
