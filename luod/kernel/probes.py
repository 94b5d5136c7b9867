"""What the running kernel offers and how this boot began (docs/kernel.md §2.4).

Everything is read from files under configurable roots, so tests can point the probes at a
fake /proc, /sys and /dev. Nothing here opens /dev/liveupdate (that would trigger the one-time
deserialization of incoming sessions).
"""

from __future__ import annotations

import errno
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

from luod.values import Value

_LUO_NUMBER: Final = re.compile(rb"luo: Retrieved live update data, liveupdate number: (\d+)")
_KHO_FROM: Final = re.compile(rb"KHO: exec from: (\S+) \(count (\d+)\)")
_TRUE: Final = {"1", "y", "yes", "on", "t", "true"}
_FALSE: Final = {"0", "n", "no", "off", "f", "false"}


class _KernelInfo(NamedTuple):
    release: str
    device_present: bool
    cmdline: str
    liveupdate_param: bool
    kho_enabled: bool | None
    liveupdate_number: int
    previous_release: str | None
    kexec_count: int
    boot_id: str = ""
    version: str = ""  # `uname -v`: tells two builds of one release apart


class KernelInfo(Value, _KernelInfo):
    __slots__ = ()


class _Holder(NamedTuple):
    pid: int
    name: str


class Holder(Value, _Holder):
    __slots__ = ()

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.name})"


class _Roots(NamedTuple):
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    dev: Path = Path("/dev")


class Roots(Value, _Roots):
    __slots__ = ()


DEFAULT_ROOTS: Final = Roots()


def cmdline_flag(cmdline: str, key: str) -> bool | None:
    """The kstrtobool value of ``key=`` on a kernel command line (last one wins)."""
    value: bool | None = None
    for word in cmdline.split():
        name, sep, raw = word.partition("=")
        if name == key and sep:
            lowered = raw.lower()
            value = True if lowered in _TRUE else False if lowered in _FALSE else value
    return value


def read_kmsg(dev: Path) -> Iterator[bytes]:
    """Every record still in the kernel log buffer (non-blocking /dev/kmsg reads)."""
    try:
        fd = os.open(dev / "kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten while reading: skip ahead
                    continue
                return
            if not record:
                return
            yield record.partition(b";")[2]
    finally:
        os.close(fd)


def parse_kexec_metadata(blob: bytes) -> tuple[str, int] | None:
    """(previous release, kexec count) from KHO's 73-byte kexec-metadata blob."""
    if len(blob) < 73:
        return None
    release = blob[4:69].split(b"\0", 1)[0].decode(errors="replace")
    (count,) = struct.unpack_from("<I", blob, 69)
    return release, count


def probe(roots: Roots = DEFAULT_ROOTS) -> KernelInfo:
    cmdline = _read_text(roots.proc / "cmdline")
    device_present = (roots.dev / "liveupdate").exists()
    number, previous, count = _boot_history(roots)
    kho = True if device_present else cmdline_flag(cmdline, "kho")
    if kho is None and (roots.sys / "kernel/debug/kho/out").exists():
        kho = True
    return KernelInfo(
        release=_read_text(roots.proc / "sys/kernel/osrelease") or os.uname().release,
        device_present=device_present,
        cmdline=cmdline,
        liveupdate_param=bool(cmdline_flag(cmdline, "liveupdate")),
        kho_enabled=kho,
        liveupdate_number=number,
        previous_release=previous,
        kexec_count=count,
        boot_id=_read_text(roots.proc / "sys/kernel/random/boot_id"),
        version=_read_text(roots.proc / "sys/kernel/version") or os.uname().version,
    )


def _boot_history(roots: Roots) -> tuple[int, str | None, int]:
    number, previous, count = 0, None, 0
    for message in read_kmsg(roots.dev):
        if match := _LUO_NUMBER.search(message):
            number = int(match.group(1))
        elif match := _KHO_FROM.search(message):
            previous, count = match.group(1).decode(errors="replace"), int(match.group(2))
    blob = roots.sys / "kernel/debug/kho/in/sub_fdts/kexec-metadata"
    try:
        meta = parse_kexec_metadata(blob.read_bytes())
    except OSError:
        meta = None
    if meta is not None:
        previous, count = meta
    return number, previous, count


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip("\0\n ")
    except OSError:
        return ""


def device_holders(path: str, proc: Path = Path("/proc")) -> list[Holder]:
    """Processes that have ``path`` open (psutil to enumerate, /proc/PID/fd to look). psutil is
    imported here: an error path's diagnosis, not worth its import on every start."""
    import psutil

    holders = []
    for process in psutil.process_iter(["pid", "name"]):
        pid = int(process.info["pid"])
        if _has_open(proc / str(pid) / "fd", path):
            holders.append(Holder(pid, str(process.info["name"])))
    return holders


def _has_open(fd_dir: Path, target: str) -> bool:
    try:
        entries = os.listdir(fd_dir)
    except OSError:
        return False
    for entry in entries:
        try:
            if os.readlink(fd_dir / entry) == target:
                return True
        except OSError:
            continue
    return False
