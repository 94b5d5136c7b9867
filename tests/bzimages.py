"""Synthetic bzImages in every compression the kernel can build with, compressed the way its
build does (scripts/Makefile.lib: gzip -n -9; bzip2/lzma -9, xz with the x86 BCJ filter and
CRC32, lzop -9, lz4 -l (legacy frame), zstd -22; all but gzip followed by the 4-byte
uncompressed size ``size_append`` writes)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from collections.abc import Callable

import lz4.block
import lzallright
import zstandard

from luod.kernel import _simimage
from luod.kernel.images import Declared

LZ4_BLOCK = 8 << 20
LZO_BLOCK = 256 << 10

A_7_2 = Declared("7.2.13", "#1 SMP PREEMPT sim", "kho-v4", "luo-v5", {"memfd": "memfd-v2"})
B_7_3 = Declared("7.3.4", "#1 SMP PREEMPT sim", "kho-v4", "luo-v5", {"memfd": "memfd-v2"})
B_ABI_V6 = Declared("7.3.4", "#2 SMP PREEMPT sim", "kho-v4", "luo-v6", {"memfd": "memfd-v2"})


def size_append(data: bytes, compressed: bytes) -> bytes:
    return compressed + struct.pack("<I", len(data))


def _lz4_legacy(data: bytes) -> bytes:
    out = [struct.pack("<I", 0x184C2102)]
    for start in range(0, len(data), LZ4_BLOCK):
        block = lz4.block.compress(
            data[start : start + LZ4_BLOCK], mode="high_compression", store_size=False
        )
        out.append(struct.pack("<I", len(block)) + block)
    return size_append(data, b"".join(out))


def _lzop(data: bytes) -> bytes:
    """lzop's container: version 0x1030 (needs 0x0940), LZO1X-999, adler32 of each block."""
    header = struct.pack(">HHHBBIIII", 0x1030, 0x2080, 0x0940, 3, 9, 0x1, 0o100644, 0, 0)
    header += b"\x00"  # no file name
    header += struct.pack(">I", zlib.adler32(header))
    blocks = []
    compressor = lzallright.LZOCompressor()
    for start in range(0, len(data), LZO_BLOCK):
        plain = data[start : start + LZO_BLOCK]
        packed = compressor.compress(plain)
        body = packed if len(packed) < len(plain) else plain
        blocks.append(struct.pack(">III", len(plain), len(body), zlib.adler32(plain)) + body)
    stream = b"\x89LZO\x00\r\n\x1a\n" + header + b"".join(blocks) + bytes(4)
    return size_append(data, stream)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda d: gzip.compress(d, compresslevel=9, mtime=0),
    "bzip2": lambda d: size_append(d, bz2.compress(d, 9)),
    "lzma": lambda d: size_append(d, lzma.compress(d, format=lzma.FORMAT_ALONE, preset=9)),
    "xz": lambda d: size_append(
        d,
        lzma.compress(
            d,
            format=lzma.FORMAT_XZ,
            check=lzma.CHECK_CRC32,
            filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}],
        ),
    ),
    "lzo": _lzop,
    "lz4": _lz4_legacy,
    "zstd": lambda d: size_append(d, zstandard.ZstdCompressor(level=19).compress(d)),
}


def bzimage(declared: Declared = A_7_2, compression: str = "gzip") -> bytes:
    return _simimage.bzimage(declared, COMPRESSORS[compression])
