"""The device state between QEMU and its memfd, through a pipe.

QEMU migrates only to a pipe or a socket with an ``fd:`` URI (QEMU 9.1 and later refuse a
regular file, a memfd included: "fd: migration to a file is not supported"), so QEMU gets one
end of a pipe and a thread of luod-qemu copies between the other end and the memfd: out of QEMU
at FREEZE, into QEMU when restoring. The same on every QEMU version (7.2 to 11 tried); the state
is small (~320 KB for a PC), the copy costs next to nothing.
"""

from __future__ import annotations

import os
import threading

from luod.qemu.errors import QemuAdapterError
from luod.qemu.files import Memfd

CHUNK = 1 << 20


class Pump:
    """One pipe and the thread that copies through it; ``qemu_end`` is for ``getfd``."""

    def __init__(self, memfd: Memfd, *, from_qemu: bool) -> None:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        self.qemu_end, self._our_end = (write_end, read_end) if from_qemu else (read_end, write_end)
        self._memfd = memfd
        self._error: OSError | None = None
        copy = self._drain if from_qemu else self._fill
        self._thread = threading.Thread(target=copy, name="luod-qemu-pump", daemon=True)
        self._thread.start()

    @property
    def error(self) -> str:
        """Why the copy failed ("" while it did not)."""
        return f"luod-qemu's copy: {self._error}" if self._error else ""

    def handed_over(self) -> None:
        """QEMU has its copy of ``qemu_end`` (``getfd``): close ours, so EOF means QEMU's."""
        if self.qemu_end >= 0:
            os.close(self.qemu_end)
            self.qemu_end = -1

    def finish(self, timeout: float) -> None:
        """Wait until the copy is complete (QEMU closed its end)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise QemuAdapterError(
                "migration-failed",
                f"the device state stream did not end within {timeout:g} s",
                "QEMU kept the migration fd open: see QEMU's messages",
            )
        if self._error is not None:
            raise QemuAdapterError(
                "migration-failed", f"copying the device state: {self._error}", ""
            ) from self._error

    def close(self) -> None:
        self.handed_over()
        if not self._thread.is_alive() and self._our_end >= 0:
            os.close(self._our_end)
            self._our_end = -1
        # a thread still blocked owns its fd until QEMU closes the other end (it is a daemon)

    def _drain(self) -> None:
        offset = 0
        try:
            while chunk := os.read(self._our_end, CHUNK):
                offset += os.pwrite(self._memfd.fileno(), chunk, offset)
        except OSError as exc:  # e.g. no room for the state: QEMU's next write fails (EPIPE)
            self._error = exc
            fd, self._our_end = self._our_end, -1
            os.close(fd)

    def _fill(self) -> None:
        offset, size = 0, self._memfd.size
        try:
            while offset < size:
                chunk = os.pread(self._memfd.fileno(), min(CHUNK, size - offset), offset)
                offset += os.write(self._our_end, chunk)
        except OSError as exc:
            self._error = exc
        finally:
            fd, self._our_end = self._our_end, -1
            os.close(fd)
