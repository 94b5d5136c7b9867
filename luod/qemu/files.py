"""The files a VM is made of, each a memfd luod preserves across the kexec:

- ``ram0``: the guest RAM, ``memory-backend-file`` on ``/proc/self/fd/N`` with ``share=on``;
- ``spec``: the VM's description (:class:`VmSpec`: its QEMU binary and arguments), so that the
  VM can be started again after the reboot from its id alone;
- ``state-N`` and ``freeze-N``: at the N-th FREEZE, the device state QEMU migrated out (RAM
  excluded by ``x-ignore-shared``) and a :class:`FreezeRecord` of when each step happened.

Each memfd is plain (no hugetlb, no ``MFD_NOEXEC_SEAL``, which LUO gives back write-sealed) and
has its final size before it is preserved: LUO freezes the size of a preserved memfd.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, NamedTuple, Protocol

from luod.qemu.errors import QemuAdapterError

SPEC_FORMAT = "luod-qemu-spec/1"
RECORD_FORMAT = "luod-qemu-freeze/1"
RECORD_SIZE = 4096
MFD_EXEC = 0x0010  # executable memfd (Linux 6.3+): never F_SEAL_EXEC, whatever vm.memfd_noexec
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class Detachable(Protocol):
    def detach(self) -> int: ...


class Memfd:
    """An owned memfd: closed once, and explicitly given away with :meth:`detach`."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def create(cls, name: str, size: int = 0) -> Memfd:
        try:
            fd = os.memfd_create(name, os.MFD_CLOEXEC | MFD_EXEC)
        except OSError:  # a kernel before 6.3 knows no MFD_EXEC
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
        memfd = cls(fd)
        if size:
            os.ftruncate(fd, size)
        return memfd

    @classmethod
    def adopt(cls, owned: Detachable) -> Memfd:
        """Take over an fd from its owner object (e.g. one luod handed back)."""
        return cls(owned.detach())

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("the memfd is closed")
        return self._fd

    @property
    def size(self) -> int:
        return os.fstat(self.fileno()).st_size

    def read(self) -> bytes:
        return os.pread(self.fileno(), self.size, 0)

    def write_at(self, data: bytes, offset: int = 0) -> None:
        os.pwrite(self.fileno(), data, offset)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Memfd:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def parse_size(text: str) -> int:
    """``64M``, ``1G``, ``4096``: bytes; a whole number of pages."""
    number, unit = text.strip().rstrip("iBb"), ""
    if number[-1:].upper() in ("K", "M", "G", "T"):
        number, unit = number[:-1], number[-1].upper()
    if not number.isdigit() or int(number) == 0:
        raise QemuAdapterError("bad-argument", f"not a size: {text!r}", "e.g. 64M, 1G, 4096")
    size = int(number) * _UNITS[unit]
    if size % 4096:
        raise QemuAdapterError("bad-argument", f"{text} is not a multiple of 4 KiB", "e.g. 64M")
    return size


class VmSpec(NamedTuple):
    """What it takes to start the VM again: QEMU binary, RAM size and the user's arguments.
    (NamedTuples here, as in luod.vmm.framing: luod-qemu starts without ``dataclasses``.)"""

    vm: str
    ram: int
    qemu: str
    args: tuple[str, ...]

    def to_bytes(self) -> bytes:
        body = {"format": SPEC_FORMAT, **self._asdict(), "args": list(self.args)}
        return json.dumps(body).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> VmSpec:
        try:
            body = json.loads(data)
            if body.get("format") != SPEC_FORMAT:
                raise ValueError(f"format {body.get('format')!r}, expected {SPEC_FORMAT}")
            args = body["args"]
            if not all(isinstance(arg, str) for arg in args):
                raise ValueError("args must be strings")
            return cls(str(body["vm"]), int(body["ram"]), str(body["qemu"]), tuple(args))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise QemuAdapterError(
                "bad-spec",
                f"the preserved VM description is unusable: {exc}",
                "written by another luod-qemu version? start the VM afresh",
            ) from exc

    def to_memfd(self) -> Memfd:
        data = self.to_bytes()
        memfd = Memfd.create(f"luod-qemu-{self.vm}-spec", len(data))
        memfd.write_at(data)
        return memfd


class FreezeRecord(NamedTuple):
    """One FREEZE: wall-clock time of the QMP ``stop`` (``realtime`` compares across the kexec),
    seconds from it to each later step, and the size of the device state."""

    attempt: int
    stop: float
    steps: dict[str, float]
    state_bytes: int = 0

    def to_bytes(self) -> bytes:
        data = json.dumps({"format": RECORD_FORMAT, **self._asdict()}).encode()
        if len(data) > RECORD_SIZE:
            raise ValueError("freeze record too long")
        return data.ljust(RECORD_SIZE, b" ")

    @classmethod
    def from_bytes(cls, data: bytes) -> FreezeRecord | None:
        """The record, or None when it is unreadable (a record is informational only)."""
        try:
            body: dict[str, Any] = json.loads(data.rstrip(b" \0"))
            if body.pop("format") != RECORD_FORMAT:
                return None
            return cls(**body)
        except (ValueError, KeyError, TypeError):
            return None
