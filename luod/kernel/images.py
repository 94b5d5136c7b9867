"""Where a kernel's handover ABI can be read: its image file and, for the running kernel, KHO's
debugfs (docs/kernel.md §8.2). Only reading here; what the bytes mean is luod.core.abi's business.

The running kernel exposes two of its compatible strings, and only as root with
``CONFIG_KEXEC_HANDOVER_DEBUGFS``: ``kho/out/fdt`` (the KHO tree, ``kho-v4``; present only on a
cold boot) and ``kho/out/sub_fdts/LUO`` (``struct luo_ser``, ``luo-v5``), plus
``kho/out/sub_fdts/kexec-metadata`` (its release). No file handler's string is exposed: those
are in the kernel's image only (``/boot/vmlinuz-RELEASE`` on Debian hosts).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

MAX_IMAGE_BYTES: Final = 512 << 20
"""A bzImage is tens of MiB; anything larger is refused before it is read into memory."""
DEBUGFS_OUT: Final = Path("kernel/debug/kho/out")
BLOBS: Final = {"fdt": "fdt", "luo": "sub_fdts/LUO", "metadata": "sub_fdts/kexec-metadata"}


@dataclass(frozen=True, slots=True)
class Declared:
    """What one kernel declares for a live update: its identity and compatible strings.

    ``None`` for a string means the kernel has none (read from a complete image: e.g. LUO is
    not built in); ``handlers`` maps an fd kind to its file handler's string.
    """

    release: str
    version: str  # as `uname -v` prints it: "#1 SMP PREEMPT ..."
    kho: str | None
    luo: str | None
    handlers: Mapping[str, str] = field(default_factory=dict)
    page_size: int | None = None


@dataclass(frozen=True, slots=True)
class ImageKey:
    """A kernel image as it is now: a changed size or mtime means different bytes."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class HandoverBlobs:
    """The running kernel's outgoing KHO debugfs blobs; ``missing`` says why one is absent."""

    fdt: bytes | None = None
    luo: bytes | None = None
    metadata: bytes | None = None
    missing: Mapping[str, str] = field(default_factory=dict)


def image_key(path: Path) -> ImageKey:
    """Raises OSError when the image cannot be looked at."""
    st = os.stat(path)
    return ImageKey(str(Path(path).absolute()), st.st_size, st.st_mtime_ns)


def open_image(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file of at most MAX_IMAGE_BYTES; else
    OSError. O_NONBLOCK: a FIFO (or a device) given as a kernel never blocks luod."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a kernel image is one)")
        if st.st_size > MAX_IMAGE_BYTES:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, more than any kernel image")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_image(path: Path) -> bytes:
    with open_image(path) as image:
        return image.read()


def read_handover_blobs(sys_root: Path) -> HandoverBlobs:
    out = sys_root / DEBUGFS_OUT
    found: dict[str, bytes] = {}
    missing: dict[str, str] = {}
    for name, relative in BLOBS.items():
        try:
            found[name] = (out / relative).read_bytes()
        except OSError as exc:
            missing[name] = f"{out / relative}: {exc.strerror or exc}"
    return HandoverBlobs(found.get("fdt"), found.get("luo"), found.get("metadata"), missing=missing)


def installed_image(release: str, boot: Path = Path("/boot")) -> Path:
    """Where Debian installs the image of kernel ``release``."""
    return boot / f"vmlinuz-{release}"
