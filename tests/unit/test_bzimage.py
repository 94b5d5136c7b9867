"""bzImage parsing and every compression the kernel builds with (luod.core.bzimage, abi)."""

from __future__ import annotations

import struct

import pytest

from luod.core import abi, bzimage
from luod.kernel import _simimage
from luod.kernel.images import Declared
from tests.bzimages import A_7_2, B_ABI_V6, COMPRESSORS
from tests.bzimages import bzimage as build


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_every_kernel_compression_is_read(compression: str) -> None:
    facts = abi.image_facts(build(B_ABI_V6, compression))
    assert facts.compression == compression
    assert facts.declared == Declared(
        "7.3.4", "#2 SMP PREEMPT sim", "kho-v4", "luo-v6", {"memfd": "memfd-v2"}, 4096
    )


def test_the_list_covers_what_the_kernel_can_build() -> None:
    # init/Kconfig's KERNEL_{GZIP,BZIP2,LZMA,XZ,LZO,LZ4,ZSTD}
    assert set(bzimage.COMPRESSIONS) == set(COMPRESSORS)


def test_lz4_legacy_frame_with_several_chunks() -> None:
    big = Declared("7.2.13", "#1", "kho-v4", "luo-v5", {"memfd": "memfd-v2"})
    data = _simimage.bzimage(big, lambda d: COMPRESSORS["lz4"](d + bytes(9 << 20)))
    payload = data[1024 + _simimage.PAYLOAD_OFFSET :]
    assert payload.count(struct.pack("<I", 0x184C2102)) == 1
    assert len(bzimage.vmlinux(data).data) > 8 << 20  # two chunks of the 8 MiB legacy blocks
    assert abi.image_facts(data).declared.luo == "luo-v5"


def test_setup_header_identity() -> None:
    header = bzimage.setup_header(build(A_7_2))
    assert (header.release, header.version) == ("7.2.13", "#1 SMP PREEMPT sim")
    assert header.protocol == 0x020F


def test_not_a_bzimage() -> None:
    with pytest.raises(bzimage.ImageError, match="no HdrS"):
        bzimage.vmlinux(b"\x7fELF" + bytes(4096))


def test_old_boot_protocol_has_no_payload_fields() -> None:
    data = bytearray(build(A_7_2))
    struct.pack_into("<H", data, 0x206, 0x0206)
    with pytest.raises(bzimage.ImageError, match=r"boot protocol 2\.06"):
        bzimage.vmlinux(bytes(data))


def test_unknown_compression_names_the_magic() -> None:
    image = _simimage.bzimage(A_7_2, lambda d: b"\x12\x34\x56\x78" + d)
    with pytest.raises(bzimage.ImageError, match=r"unknown compression .*12345678"):
        abi.image_facts(image)


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_a_truncated_payload_is_an_error(compression: str) -> None:
    image = bytearray(build(A_7_2, compression))
    start = 1024 + _simimage.PAYLOAD_OFFSET
    (length,) = struct.unpack_from("<I", image, 0x24C)
    struct.pack_into("<I", image, 0x24C, length // 2)
    with pytest.raises(bzimage.ImageError):
        bzimage.vmlinux(bytes(image[: start + length // 2]))


def test_payload_outside_the_file() -> None:
    image = build(A_7_2)
    with pytest.raises(bzimage.ImageError, match="outside"):
        bzimage.setup_header(image[: 1024 + _simimage.PAYLOAD_OFFSET + 8])


def test_a_payload_that_is_not_a_vmlinux() -> None:
    image = _simimage.bzimage(A_7_2, lambda d: COMPRESSORS["gzip"](b"MZ" + d[4:]))
    with pytest.raises(bzimage.ImageError, match="not an ELF"):
        bzimage.vmlinux(image)


def test_strings_inside_longer_words_do_not_count() -> None:
    data = b"\0xluo-v7\0pre.kho-v9\0luo-v5\0kho-v4\0memfd-v2x\0"
    found = abi.compatible_strings(data, ("kho", "luo", "memfd"))
    assert found == {"kho": "kho-v4", "luo": "luo-v5", "memfd": None}


def test_two_versions_of_one_abi_is_an_error() -> None:
    with pytest.raises(bzimage.ImageError, match="several luo ABIs"):
        abi.compatible_strings(b"\0luo-v5\0luo-v6\0", ("luo",))


def test_an_image_without_luo_declares_none() -> None:
    bare = Declared("7.2.13", "#1", "kho-v4", None, {})
    assert abi.image_facts(build(bare)).declared.luo is None


# debugfs kho/out/fdt of a cold-booted 7.2.13 (tests/vm), as read: 233 bytes of a 285-byte tree
# (its size when the file was created), the strings block cut after "prese".
REAL_KHO_FDT = bytes.fromhex(
    "d00dfeed0000011d00000038000000e40000002800000011000000100000000000000039000000ac00000000"
    "00000000000000000000000000000001000000000000000300000007000000156b686f2d7634000000000003"
    "000000080000000000c0560000000000000000014c554f0000000003000000080000002f2000000000000000"
    "00000003000000080000002000d096000000000000000002000000016b657865632d6d657461646174610000"
    "00000003000000080000002f490000000000000000000003000000080000002000a05a000000000000000002"
    "00000002000000097072657365"
)


def test_kho_fdt_root_compatible() -> None:
    assert abi.fdt_compatible(_simimage.fdt("kho-v4")) == "kho-v4"
    assert abi.fdt_compatible(REAL_KHO_FDT) == "kho-v4"
    assert abi.fdt_compatible(_simimage.fdt("kho-v4", cut_strings=True)) == "kho-v4"
    with pytest.raises(ValueError, match="not a flattened device tree"):
        abi.fdt_compatible(b"\0" * 64)


def test_luo_ser_compatible() -> None:
    blob = _simimage.luo_ser("luo-v5", 3)
    assert len(blob) == 32 and abi.luo_compatible(blob) == "luo-v5"
    with pytest.raises(ValueError, match="32"):
        abi.luo_compatible(blob[:16])
