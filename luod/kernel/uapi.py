"""The LUO uAPI of <linux/liveupdate.h> (Linux 7.2/7.3), declared with cffi.

CONTRACT §3.1: six commands, all ``_IO(0xBA, nr)``, and five argument structs. The layout is
computed by cffi from the declarations below; ``tests/unit/test_uapi.py`` checks every size and
field offset against the values measured on the real kernel.
"""

from __future__ import annotations

from typing import Any, Final

import cffi

CDEF: Final = """
struct liveupdate_ioctl_create_session {
    uint32_t size;
    int32_t fd;
    uint8_t name[64];
};
struct liveupdate_ioctl_retrieve_session {
    uint32_t size;
    int32_t fd;
    uint8_t name[64];
};
struct liveupdate_session_preserve_fd {
    uint32_t size;
    int32_t fd;
    uint64_t token;
};
struct liveupdate_session_retrieve_fd {
    uint32_t size;
    int32_t fd;
    uint64_t token;
};
struct liveupdate_session_finish {
    uint32_t size;
    uint32_t reserved;
};
struct liveupdate_session_get_name {
    uint32_t size;
    uint32_t reserved;
    uint8_t name[64];
};
"""

ffi: Final = cffi.FFI()
ffi.cdef(CDEF)

NAME_LENGTH: Final = 64
"""LIVEUPDATE_SESSION_NAME_LENGTH, the NUL included: names are 1..63 bytes."""

IOCTL_TYPE: Final = 0xBA

# <asm-generic/ioctl.h>
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
IOC_NONE: Final = 0
IOC_WRITE: Final = 1
IOC_READ: Final = 2


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    """The kernel's _IOC() macro."""
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def io(type_: int, nr: int) -> int:
    """The kernel's _IO() macro: no direction, no size."""
    return ioc(IOC_NONE, type_, nr, 0)


def ioc_nr(cmd: int) -> int:
    return (cmd >> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1)


CREATE_SESSION: Final = io(IOCTL_TYPE, 0x00)
RETRIEVE_SESSION: Final = io(IOCTL_TYPE, 0x01)
SESSION_PRESERVE_FD: Final = io(IOCTL_TYPE, 0x40)
SESSION_RETRIEVE_FD: Final = io(IOCTL_TYPE, 0x41)
SESSION_FINISH: Final = io(IOCTL_TYPE, 0x42)
SESSION_GET_NAME: Final = io(IOCTL_TYPE, 0x43)

STRUCT_OF: Final[dict[int, str]] = {
    CREATE_SESSION: "struct liveupdate_ioctl_create_session",
    RETRIEVE_SESSION: "struct liveupdate_ioctl_retrieve_session",
    SESSION_PRESERVE_FD: "struct liveupdate_session_preserve_fd",
    SESSION_RETRIEVE_FD: "struct liveupdate_session_retrieve_fd",
    SESSION_FINISH: "struct liveupdate_session_finish",
    SESSION_GET_NAME: "struct liveupdate_session_get_name",
}

COMMAND_NAMES: Final[dict[int, str]] = {
    CREATE_SESSION: "CREATE_SESSION",
    RETRIEVE_SESSION: "RETRIEVE_SESSION",
    SESSION_PRESERVE_FD: "PRESERVE_FD",
    SESSION_RETRIEVE_FD: "RETRIEVE_FD",
    SESSION_FINISH: "FINISH",
    SESSION_GET_NAME: "GET_NAME",
}


def new_arg(cmd: int, **fields: int) -> Any:
    """A zeroed argument struct for ``cmd`` with ``size`` set (always) and ``fields`` filled."""
    ctype = STRUCT_OF[cmd]
    arg = ffi.new(ctype + " *")
    arg.size = ffi.sizeof(ctype)
    for key, value in fields.items():
        setattr(arg, key, value)
    return arg


def set_name(arg: Any, name: bytes) -> None:
    """Copy ``name`` into ``arg.name`` (caller validated it fits)."""
    ffi.memmove(arg.name, name, len(name))


def get_name(arg: Any) -> bytes:
    raw = bytes(ffi.buffer(arg.name))
    return raw.split(b"\0", 1)[0]
