"""Argument handling in the order of the kernel's checks (docs/kernel.md §4.2), with raw buffers."""

from __future__ import annotations

import errno
import struct

import pytest

from luod.kernel import OwnedFd, uapi
from tests.contract.harness import Luo

CREATE_SIZE = 72


def create_arg(name: bytes, size: int = CREATE_SIZE, length: int = CREATE_SIZE) -> bytearray:
    buf = bytearray(length)
    struct.pack_into("<Ii", buf, 0, size, -1)
    buf[8 : 8 + len(name)] = name
    return buf


def raw_create(luo: Luo, buf: bytearray, cmd: int = uapi.CREATE_SESSION) -> int:
    with luo.opened() as device:
        device.ioctl(cmd, buf)
    fd: int = struct.unpack_from("<i", buf, 4)[0]
    luo.own(OwnedFd(fd))
    return fd


def raw_errno(luo: Luo, buf: bytearray, cmd: int = uapi.CREATE_SESSION) -> int:
    with pytest.raises(OSError) as info:
        raw_create(luo, buf, cmd)
    return info.value.errno or 0


def session_errno(luo: Luo, cmd: int, buf: bytearray) -> int:
    session = luo.create("raw-target")
    with pytest.raises(OSError) as info:
        luo.backend.platform.ioctl(session.fileno(), cmd, buf)
    return info.value.errno or 0


def test_create_session_empty_name_is_einval(luo: Luo) -> None:
    assert raw_errno(luo, create_arg(b"")) == errno.EINVAL


def test_create_session_no_null_termination_is_einval(luo: Luo) -> None:
    assert raw_errno(luo, create_arg(b"x" * 64)) == errno.EINVAL


def test_create_session_name_stops_at_the_first_nul(luo: Luo) -> None:
    raw_create(luo, create_arg(b"abc\0def"))
    with pytest.raises(OSError) as info:
        raw_create(luo, create_arg(b"abc"))
    assert info.value.errno == errno.EEXIST


def test_create_session_size_too_small_is_einval(luo: Luo) -> None:
    assert raw_errno(luo, create_arg(b"small", size=4)) == errno.EINVAL


def test_create_session_trailing_nonzero_is_e2big(luo: Luo) -> None:
    buf = create_arg(b"tail", size=CREATE_SIZE + 8, length=CREATE_SIZE + 8)
    buf[CREATE_SIZE + 3] = 1
    assert raw_errno(luo, buf) == errno.E2BIG


def test_create_session_larger_zero_padded_struct_is_accepted(luo: Luo) -> None:
    buf = create_arg(b"padded", size=CREATE_SIZE + 8, length=CREATE_SIZE + 8)
    assert raw_create(luo, buf) >= 0


def test_create_session_iow_encoding_is_enotty(luo: Luo) -> None:
    iow = uapi.ioc(uapi.IOC_WRITE, uapi.IOCTL_TYPE, 0, CREATE_SIZE)
    assert raw_errno(luo, create_arg(b"iow"), iow) == errno.ENOTTY


def test_device_nr_out_of_range_is_einval_not_enotty(luo: Luo) -> None:
    assert raw_errno(luo, create_arg(b"nr"), uapi.SESSION_GET_NAME) == errno.EINVAL


def test_session_nr_out_of_range_is_einval(luo: Luo) -> None:
    assert session_errno(luo, uapi.CREATE_SESSION, create_arg(b"x")) == errno.EINVAL


def test_session_wrong_type_byte_is_enotty(luo: Luo) -> None:
    foreign = uapi.io(0xBB, 0x43)
    assert session_errno(luo, foreign, bytearray(struct.pack("<II", 72, 0) + bytes(64))) == (
        errno.ENOTTY
    )


def test_get_name_reserved_nonzero_is_einval(luo: Luo) -> None:
    buf = bytearray(struct.pack("<II", 72, 1) + bytes(64))
    assert session_errno(luo, uapi.SESSION_GET_NAME, buf) == errno.EINVAL


def test_get_name_size_too_small_is_einval(luo: Luo) -> None:
    buf = bytearray(struct.pack("<II", 8, 0) + bytes(64))
    assert session_errno(luo, uapi.SESSION_GET_NAME, buf) == errno.EINVAL


def test_direction_is_checked_before_the_struct_tail(luo: Luo) -> None:
    buf = bytearray(struct.pack("<IIQ", 16, 0, 1))  # E2BIG if it got that far
    assert session_errno(luo, uapi.SESSION_FINISH, buf) == errno.EINVAL


def test_preserve_fd_of_minus_one_is_ebadf(luo: Luo) -> None:
    buf = bytearray(struct.pack("<IiQ", 16, -1, 7))
    assert session_errno(luo, uapi.SESSION_PRESERVE_FD, buf) == errno.EBADF


def test_preserve_fd_duplicate_token_is_checked_before_the_fd(luo: Luo) -> None:
    session = luo.create("token-first")
    session.preserve(luo.memfd(b"a"), 5)
    buf = bytearray(struct.pack("<IiQ", 16, -1, 5))
    with pytest.raises(OSError) as info:
        luo.backend.platform.ioctl(session.fileno(), uapi.SESSION_PRESERVE_FD, buf)
    assert info.value.errno == errno.EEXIST
