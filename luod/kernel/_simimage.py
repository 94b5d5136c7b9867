"""Synthetic bzImages: the simulated kernel's own image, and test images of any ABI.

Laid out as the real ones are (luod.core.bzimage): a setup header with ``HdrS``, the
``kernel_version`` string and payload_offset/payload_length, and a compressed payload that is an
x86-64 ELF whose data holds the compatible strings the way vmlinux does (NUL-terminated strings
for KHO and LUO, a handler's string inside its struct). Not bootable; only for reading.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from typing import Final

from luod.kernel.images import Declared

SETUP_SECTS: Final = 1
VERSION_AT: Final = 0x300  # inside the setup sectors
PAYLOAD_OFFSET: Final = 64  # after the start of the protected-mode code


def vmlinux(declared: Declared, filler: int = 4096) -> bytes:
    """An ELF64 x86-64 header and data with the strings of ``declared``."""
    elf = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHI", 2, 62, 1)
    elf += bytes(64 - len(elf))
    banner = f"Linux version {declared.release} (luod@sim) {declared.version}\n".encode()
    data = [bytes(filler), banner, b"\0"]
    for text in (declared.kho, declared.luo):
        if text:
            data.append(b"compatible\0" + text.encode() + b"\0")
    for text in declared.handlers.values():  # char compatible[48] after a kernel pointer
        data.append(b"\x19\x82\x81\xff\xff\xff\xff" + text.encode().ljust(48, b"\0"))
    return elf + b"".join(data) + bytes(filler)


def gzip_payload(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def bzimage(declared: Declared, compress: Callable[[bytes], bytes] = gzip_payload) -> bytes:
    payload = compress(vmlinux(declared))
    setup = bytearray((SETUP_SECTS + 1) * 512)
    setup[0x1F1] = SETUP_SECTS
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    struct.pack_into("<H", setup, 0x20E, VERSION_AT - 0x200)
    kernel_version = f"{declared.release} (luod@sim) {declared.version}".encode()
    setup[VERSION_AT : VERSION_AT + len(kernel_version)] = kernel_version
    struct.pack_into("<II", setup, 0x248, PAYLOAD_OFFSET, len(payload))
    return bytes(setup) + bytes(PAYLOAD_OFFSET) + payload + bytes(64)


def fdt(compatible: str, cut_strings: bool = False) -> bytes:
    """A flattened device tree whose root has only ``compatible`` (KHO's root). ``cut_strings``:
    as debugfs kho/out/fdt shows it, cut at the tree's early size (luod.core.abi.fdt_compatible)."""
    strings = b"preserved-memory-map\0compatible\0"  # KHO's, in its order
    value = compatible.encode() + b"\0"
    value += bytes(-len(value) % 4)
    body = struct.pack(">II", 1, 0)  # FDT_BEGIN_NODE, "" padded
    body += struct.pack(">III", 3, len(compatible) + 1, strings.index(b"compatible")) + value
    body += struct.pack(">II", 2, 9)  # FDT_END_NODE, FDT_END
    rsvmap = bytes(16)
    struct_at = 40 + len(rsvmap)
    strings_at = struct_at + len(body)
    total = strings_at + len(strings)
    header = struct.pack(
        ">10I", 0xD00DFEED, total, struct_at, strings_at, 40, 17, 16, 0, len(strings), len(body)
    )
    return header + rsvmap + body + (strings[:5] if cut_strings else strings)


def luo_ser(compatible: str, liveupdate_num: int) -> bytes:
    """``struct luo_ser`` as kho/out/sub_fdts/LUO shows it (32 bytes, docs/kernel.md §8.1)."""
    return struct.pack("<8sQQQ", compatible.encode(), liveupdate_num, 0, 0)


def kexec_metadata(release: str, count: int) -> bytes:
    """``struct kho_kexec_metadata`` (73 bytes): version 1, the release, the kexec count."""
    return struct.pack("<I65sI", 1, release.encode(), count)
