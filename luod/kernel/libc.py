"""The raw system calls the kernel layer needs, through cffi's ABI mode on libc.

One wrapper of a few lines per call; each turns failure into ``OSError(errno)``. Only the
kernel platform (``platform.py``) calls these, but for ``malloc_trim`` (luod.daemon.heap).
"""

from __future__ import annotations

from typing import Any, Final

from _cffi_backend import FFI

from luod.kernel._libc_cffi import ffi as _generated

_ffi: Final[FFI] = _generated  # typed here (types-cffi); the libc functions are not declared
_lib: Final[Any] = _ffi.dlopen(None)  # to cffi's types: each is wrapped below, typed

SYS_KEXEC_FILE_LOAD: Final = 320  # x86_64
KEXEC_FILE_UNLOAD: Final = 0x1
KEXEC_FILE_NO_INITRAMFS: Final = 0x4
LINUX_REBOOT_CMD_KEXEC: Final = 0x45584543


def _check(result: int) -> int:
    if result < 0:
        raise OSError(_ffi.errno, __import__("os").strerror(_ffi.errno))
    return result


def ioctl(fd: int, request: int, buf: Any) -> int:
    """ioctl(fd, request, buf) where ``buf`` is a writable buffer (the argument struct)."""
    ptr = _ffi.from_buffer("char[]", buf, require_writable=True)
    return _check(_lib.ioctl(fd, _ffi.cast("unsigned long", request), ptr))


def kexec_file_load(kernel_fd: int, initrd_fd: int, cmdline: bytes, flags: int) -> None:
    """kexec_file_load(2); ``cmdline`` without the trailing NUL (added here)."""
    text = _ffi.new("char[]", cmdline)
    _check(
        _lib.syscall(
            _ffi.cast("long", SYS_KEXEC_FILE_LOAD),
            _ffi.cast("int", kernel_fd),
            _ffi.cast("int", initrd_fd),
            _ffi.cast("unsigned long", len(cmdline) + 1),
            text,
            _ffi.cast("unsigned long", flags),
        )
    )


def kexec_file_unload() -> None:
    _check(
        _lib.syscall(
            _ffi.cast("long", SYS_KEXEC_FILE_LOAD),
            _ffi.cast("int", -1),
            _ffi.cast("int", -1),
            _ffi.cast("unsigned long", 0),
            _ffi.NULL,
            _ffi.cast("unsigned long", KEXEC_FILE_UNLOAD),
        )
    )


def reboot_kexec() -> None:
    """reboot(LINUX_REBOOT_CMD_KEXEC); returns only on failure (which raises)."""
    _check(_lib.reboot(LINUX_REBOOT_CMD_KEXEC))


def fstatfs_type(fd: int) -> int:
    """``f_type`` of fstatfs(2): the first word of struct statfs on 64-bit Linux."""
    buf = _ffi.new("long[32]")
    _check(_lib.fstatfs(fd, buf))
    return int(buf[0]) & 0xFFFFFFFF


def malloc_trim() -> bool | None:
    """glibc's malloc_trim(0): the heap's free memory back to the system. True when some was
    released; None where the C library has no malloc_trim (not glibc)."""
    try:
        trim = _lib.malloc_trim
    except (AttributeError, NotImplementedError):  # cffi: symbol not found in this libc
        return None
    return bool(trim(0))
