"""Generates the out-of-line cffi modules ``_uapi_cffi.py`` and ``_libc_cffi.py``.

At runtime luod then needs no C parser (pycparser): the declarations are parsed here, once, and
the generated modules are checked in. ``tests/unit/test_uapi.py`` fails when they drift from the
declarations. Regenerate with ``python -m luod.kernel._cffi_build``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import cffi

HERE: Final = Path(__file__).resolve().parent

UAPI_CDEF: Final = """
struct liveupdate_ioctl_create_session { uint32_t size; int32_t fd; uint8_t name[64]; };
struct liveupdate_ioctl_retrieve_session { uint32_t size; int32_t fd; uint8_t name[64]; };
struct liveupdate_session_preserve_fd { uint32_t size; int32_t fd; uint64_t token; };
struct liveupdate_session_retrieve_fd { uint32_t size; int32_t fd; uint64_t token; };
struct liveupdate_session_finish { uint32_t size; uint32_t reserved; };
struct liveupdate_session_get_name { uint32_t size; uint32_t reserved; uint8_t name[64]; };
"""

LIBC_CDEF: Final = """
int ioctl(int fd, unsigned long request, ...);
long syscall(long number, ...);
int reboot(int howto);
int fstatfs(int fd, void *buf);
int malloc_trim(size_t pad);
"""

MODULES: Final = {"_uapi_cffi": UAPI_CDEF, "_libc_cffi": LIBC_CDEF}


def generate(name: str) -> str:
    builder = cffi.FFI()
    builder.cdef(MODULES[name])
    builder.set_source(f"luod.kernel.{name}", None)
    target = HERE / f".{name}.generated"
    builder.emit_python_code(str(target))
    text = target.read_text()
    target.unlink()
    return "# ruff: noqa\n# mypy: ignore-errors\n" + text


def main() -> None:
    for name in MODULES:
        (HERE / f"{name}.py").write_text(generate(name))


if __name__ == "__main__":
    main()
