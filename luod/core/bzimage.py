"""An x86 bzImage, read as far as knowing what its kernel declares needs (pure: bytes in).

The setup header (the kernel's Documentation/arch/x86/boot.rst): ``setup_sects`` at 0x1f1 (0
means 4), ``HdrS`` at 0x202, the boot protocol version at 0x206, ``kernel_version`` at 0x20e (the
offset, minus 0x200, of a NUL-terminated "RELEASE (USER@HOST) #N ..." string), and, since
protocol 2.08, ``payload_offset``/``payload_length`` at 0x248/0x24c, relative to the
protected-mode code that follows the (setup_sects + 1) * 512 bytes of setup. The payload is the
compressed vmlinux (an ELF). Its compression is told by its magic, as the kernel's
``scripts/extract-vmlinux`` does, and every compression the kernel can build with is decoded
here: gzip, bzip2, lzma and xz (the standard library), lz4 in the kernel's *legacy* frame
(``lz4``), zstd (``zstandard``) and lzo in lzop's container (``lzallright``).
Most of these payloads end with 4 bytes the kernel's build appends (the uncompressed size):
every decoder stops at the end of its stream and ignores them.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

SETUP_MAGIC: Final = b"HdrS"
MIN_PROTOCOL: Final = 0x0208  # payload_offset/payload_length exist from here on
MAX_OUTPUT: Final = 1 << 30  # a decompressed vmlinux is tens of MiB: more is not a kernel
LZ4_LEGACY_MAGIC: Final = 0x184C2102
LZ4_LEGACY_BLOCK: Final = 8 << 20
LZOP_MAGIC: Final = b"\x89LZO\x00\r\n\x1a\n"
MAGICS: Final = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\xfd7zXZ\x00", "xz"),
    (LZOP_MAGIC[:4], "lzo"),
    (struct.pack("<I", LZ4_LEGACY_MAGIC), "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
COMPRESSIONS: Final = tuple(name for _, name in MAGICS)


class ImageError(ValueError):
    """The bytes are not a bzImage luod can read; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class SetupHeader:
    protocol: int
    kernel_version: str  # "7.2.13 (root@vm) #1 SMP PREEMPT ..."
    payload_start: int
    payload_length: int

    @property
    def release(self) -> str:
        return self.kernel_version.split(" ", 1)[0]

    @property
    def version(self) -> str:
        """What ``uname -v`` prints once this kernel runs ("#1 SMP PREEMPT ...")."""
        return self.kernel_version.partition(") ")[2]


@dataclass(frozen=True, slots=True)
class Vmlinux:
    header: SetupHeader
    compression: str
    data: bytes


def setup_header(image: bytes) -> SetupHeader:
    if len(image) < 0x250 or image[0x202:0x206] != SETUP_MAGIC:
        raise ImageError("not a bzImage (no HdrS setup header at 0x202)")
    (protocol,) = struct.unpack_from("<H", image, 0x206)
    if protocol < MIN_PROTOCOL:
        raise ImageError(f"boot protocol {protocol >> 8}.{protocol & 0xFF:02} has no payload")
    setup_size = ((image[0x1F1] or 4) + 1) * 512
    (version_at,) = struct.unpack_from("<H", image, 0x20E)
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = setup_size + offset
    if not length or start + length > len(image):
        raise ImageError(f"payload {start}+{length} lies outside the {len(image)}-byte image")
    return SetupHeader(protocol, _cstring(image, version_at + 0x200), start, length)


def compression_of(payload: bytes) -> str:
    for magic, name in MAGICS:
        if payload.startswith(magic):
            return name
    raise ImageError(f"unknown compression (payload starts with {payload[:6].hex()})")


def decompress(payload: bytes, compression: str) -> bytes:
    decoder = _DECODERS.get(compression)
    if decoder is None:
        raise ImageError(f"unknown compression {compression!r}")
    try:
        data = decoder(payload)
    except ImageError:
        raise
    except Exception as exc:  # each library has its own error types for corrupt input
        raise ImageError(f"{compression} payload does not decompress: {exc}") from exc
    if not data.startswith(b"\x7fELF"):
        raise ImageError(f"the {compression} payload is not an ELF vmlinux")
    return data


def vmlinux(image: bytes) -> Vmlinux:
    header = setup_header(image)
    payload = image[header.payload_start : header.payload_start + header.payload_length]
    compression = compression_of(payload)
    return Vmlinux(header, compression, decompress(payload, compression))


def _cstring(data: bytes, offset: int) -> str:
    if not 0 <= offset < len(data):
        return ""
    return data[offset : offset + 256].split(b"\0", 1)[0].decode("ascii", errors="replace")


# --- decoders: each stops at the end of its stream --------------------------------------------
def _gzip(payload: bytes) -> bytes:
    return _whole(zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), payload)


def _bzip2(payload: bytes) -> bytes:
    return _whole(bz2.BZ2Decompressor(), payload)


def _lzma(payload: bytes) -> bytes:
    return _whole(lzma.LZMADecompressor(format=lzma.FORMAT_ALONE), payload)


def _xz(payload: bytes) -> bytes:
    return _whole(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), payload)


def _zstd(payload: bytes) -> bytes:
    import zstandard

    decoder = zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj()
    return _whole(decoder, payload, capped=False)  # its size is checked after


def _whole(decoder: Any, payload: bytes, capped: bool = True) -> bytes:
    """Decode one stream to its end (what follows it is ignored); a cut stream is an error."""
    data = decoder.decompress(payload, MAX_OUTPUT) if capped else decoder.decompress(payload)
    _capped(data)
    if not decoder.eof:
        raise ImageError("the compressed stream ends early (a truncated image?)")
    return bytes(data)


def _lz4_legacy(payload: bytes) -> bytes:
    """The kernel's legacy LZ4 frame (``lz4 -l``): the magic, then (u32 length, block)
    chunks of at most 8 MiB each; the magic may repeat between chunks."""
    import lz4.block

    chunks: list[bytes] = []
    offset, total = 4, 0
    while len(payload) - offset > 4:  # the last 4 bytes: the size the kernel's build appends
        (length,) = struct.unpack_from("<I", payload, offset)
        offset += 4
        if length == LZ4_LEGACY_MAGIC:
            continue
        if length > len(payload) - offset:
            raise ImageError("truncated lz4 chunk")
        chunk = lz4.block.decompress(
            payload[offset : offset + length], uncompressed_size=LZ4_LEGACY_BLOCK
        )
        chunks.append(chunk)
        total += len(chunk)
        offset += length
        _capped(b"", total)
    return b"".join(chunks)


def _lzo(payload: bytes) -> bytes:
    """lzop's container (what ``lzop -9`` writes for the kernel), blocks of raw LZO1X."""
    import lzallright

    offset, flags = _lzop_header(payload)
    chunks: list[bytes] = []
    total = 0
    while True:
        out_len, in_len = _u32be(payload, offset), _u32be(payload, offset + 4)
        if out_len == 0:
            return b"".join(chunks)
        offset += 8 + 4 * bool(flags & 0x001) + 4 * bool(flags & 0x100)  # adler32/crc32 of data
        if in_len < out_len:
            offset += 4 * bool(flags & 0x002) + 4 * bool(flags & 0x200)  # ... of the compressed
        block = payload[offset : offset + in_len]
        if len(block) != in_len or in_len > out_len:
            raise ImageError("truncated or corrupt lzo block")
        if in_len < out_len:
            block = lzallright.LZOCompressor.decompress(block, output_size_hint=out_len)
        chunks.append(block)
        total += len(block)
        offset += in_len
        _capped(b"", total)


def _lzop_header(payload: bytes) -> tuple[int, int]:
    """Offset of the first block, and the header's flags."""
    if not payload.startswith(LZOP_MAGIC):
        raise ImageError("no lzop magic")
    version = struct.unpack_from(">H", payload, 9)[0]
    offset = 9 + 2 + 2 + (2 if version >= 0x0940 else 0) + 1 + (1 if version >= 0x0940 else 0)
    flags = _u32be(payload, offset)
    offset += 4 + (4 if flags & 0x800 else 0)  # F_H_FILTER
    offset += 4 + 4 + (4 if version >= 0x0940 else 0)  # mode, mtime (low, high)
    offset += 1 + payload[offset] + 4  # name, header checksum
    if flags & 0x040:  # F_H_EXTRA_FIELD
        offset += 4 + _u32be(payload, offset) + 4
    return offset, flags


def _u32be(data: bytes, offset: int) -> int:
    if offset + 4 > len(data):
        raise ImageError("truncated lzo stream")
    return int(struct.unpack_from(">I", data, offset)[0])


def _capped(data: bytes, size: int | None = None) -> bytes:
    if (len(data) if size is None else size) >= MAX_OUTPUT:
        raise ImageError(f"decompresses to more than {MAX_OUTPUT >> 20} MiB: not a kernel")
    return data


_DECODERS: Final[dict[str, Callable[[bytes], bytes]]] = {
    "gzip": _gzip,
    "bzip2": _bzip2,
    "lzma": _lzma,
    "xz": _xz,
    "lzo": _lzo,
    "lz4": _lz4_legacy,
    "zstd": _zstd,
}
