"""The cffi declarations match the kernel's uAPI (docs/kernel.md §4.1, measured sizes/offsets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from luod.kernel import _cffi_build, uapi

LAYOUT = {
    "struct liveupdate_ioctl_create_session": (72, 4, {"size": 0, "fd": 4, "name": 8}),
    "struct liveupdate_ioctl_retrieve_session": (72, 4, {"size": 0, "fd": 4, "name": 8}),
    "struct liveupdate_session_preserve_fd": (16, 8, {"size": 0, "fd": 4, "token": 8}),
    "struct liveupdate_session_retrieve_fd": (16, 8, {"size": 0, "fd": 4, "token": 8}),
    "struct liveupdate_session_finish": (8, 4, {"size": 0, "reserved": 4}),
    "struct liveupdate_session_get_name": (72, 4, {"size": 0, "reserved": 4, "name": 8}),
}

NUMBERS = {
    uapi.CREATE_SESSION: 0xBA00,
    uapi.RETRIEVE_SESSION: 0xBA01,
    uapi.SESSION_PRESERVE_FD: 0xBA40,
    uapi.SESSION_RETRIEVE_FD: 0xBA41,
    uapi.SESSION_FINISH: 0xBA42,
    uapi.SESSION_GET_NAME: 0xBA43,
}


@pytest.mark.parametrize("ctype", sorted(LAYOUT))
def test_struct_size_and_alignment(ctype: str) -> None:
    size, align, _ = LAYOUT[ctype]
    assert (uapi.ffi.sizeof(ctype), uapi.ffi.alignof(ctype)) == (size, align)


@pytest.mark.parametrize("ctype", sorted(LAYOUT))
def test_field_offsets(ctype: str) -> None:
    _, _, fields = LAYOUT[ctype]
    assert {f: uapi.ffi.offsetof(ctype, f) for f in fields} == fields


def test_name_field_is_64_bytes() -> None:
    assert (
        uapi.ffi.sizeof(uapi.ffi.typeof("struct liveupdate_ioctl_create_session").fields[2][1].type)
        == 64
    )


@pytest.mark.parametrize("cmd", sorted(NUMBERS))
def test_ioctl_numbers(cmd: int) -> None:
    assert cmd == NUMBERS[cmd]


def test_every_command_has_a_struct() -> None:
    assert set(uapi.STRUCT_OF) == set(NUMBERS)


def test_new_arg_always_sets_size() -> None:
    for cmd, ctype in uapi.STRUCT_OF.items():
        assert uapi.new_arg(cmd).size == uapi.ffi.sizeof(ctype)


def test_ioc_encodes_direction_and_size_like_the_kernel() -> None:
    assert uapi.ioc(uapi.IOC_WRITE, 0xBA, 0, 72) == 0x4048BA00
    assert uapi.ioc_nr(0x4048BA43) == 0x43


@pytest.mark.parametrize("name", sorted(_cffi_build.MODULES))
def test_generated_cffi_modules_match_the_declarations(name: str) -> None:
    checked_in = (Path(_cffi_build.__file__).parent / f"{name}.py").read_text()
    assert checked_in == _cffi_build.generate(name), "run python -m luod.kernel._cffi_build"
