"""The simulator's handover ABI: which kernel a simulated boot is, and what its debugfs shows.

A cold simulated boot is kernel ``SIM_RELEASE``, declaring what 7.2.13 does (``kho-v4``,
``luo-v5``, ``memfd-v2``); like a Debian host it has its image installed, in
STATE_DIR/boot/vmlinuz-RELEASE (a synthetic bzImage, luod.kernel._simimage). A boot after a
simulated kexec is the kernel of the image that was loaded, as far as the ``read_abi`` it was
given can read that image (luod passes luod.core's reader: the same code as its preflight, so
the same images give the same answers); an image it cannot read boots as the cold kernel.

What the next boot does with the handover follows the kernel (docs/kernel.md §8.3):
another LUO string panics it; another KHO string, or no LUO at all, drops the handover (the
sessions are lost); another file handler string makes the first open of /dev/liveupdate fail
with EIO for the rest of that boot (luod.kernel.sim's deserialization).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from luod.kernel import _simimage
from luod.kernel._simdisk import KHO_COMPATIBLE, LUO_COMPATIBLE, MEMFD_COMPATIBLE, Handover
from luod.kernel.images import Declared, HandoverBlobs, installed_image

SIM_RELEASE: Final = "7.2.13-luodsim"
NATIVE: Final = Declared(
    SIM_RELEASE,
    "#1 SMP PREEMPT luod simulator",
    KHO_COMPATIBLE,
    LUO_COMPATIBLE,
    {"memfd": MEMFD_COMPATIBLE},
    4096,
)
ReadAbi = Callable[[Path], Declared | None]
"""What an image declares, or None when it cannot be read."""


def installed_native_image(state_dir: Path) -> Path:
    path = installed_image(NATIVE.release, state_dir / "boot")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_bytes(_simimage.bzimage(NATIVE))
        staging.replace(path)
    return path


def booted_kernel(handover: Handover | None, read_abi: ReadAbi | None) -> Declared:
    if handover is None or not handover.image or read_abi is None:
        return NATIVE
    return read_abi(Path(handover.image)) or NATIVE


def refusal(handover: Handover, kernel: Declared) -> tuple[str, bool] | None:
    """(kernel message, panics) when ``kernel`` cannot take ``handover``; None when it can."""
    if not handover.luo:
        return None
    if kernel.kho != handover.kho_compatible:
        return f"KHO: FDT is incompatible with '{kernel.kho}', disabling KHO revival", False
    if kernel.luo is None:
        return "luo: not built in: the incoming LUO state is ignored", False
    if kernel.luo != handover.luo_compatible:
        return f"luo: LUO state is incompatible with '{kernel.luo}'", True
    return None


def outgoing_blobs(
    kernel: Declared, cold_boot: bool, luo_enabled: bool, next_number: int, kexec_count: int
) -> HandoverBlobs:
    """What debugfs kho/out shows (docs/kernel.md §8.2): the tree only on a cold boot."""
    missing = {}
    fdt = _simimage.fdt(kernel.kho, cut_strings=True) if cold_boot and kernel.kho else None
    if fdt is None:
        missing["fdt"] = "No such file or directory"
    luo = None
    if luo_enabled and kernel.luo:
        luo = _simimage.luo_ser(kernel.luo, next_number)
    else:
        missing["luo"] = "No such file or directory"
    metadata = _simimage.kexec_metadata(kernel.release, kexec_count)
    return HandoverBlobs(fdt, luo, metadata, missing)
