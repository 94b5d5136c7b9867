"""The smallest guest that proves a VM went on across a live update, and probes of its RAM.

The boot-sector guest of luod's QEMU canary (``luod.qemu.canary``: a 1.44 MB floppy whose boot
code stores the TSC at boot in ``STAMP``, fills 512 KiB below 640 KiB with a pattern, writes the
magic ``LUOD`` in ``MAGIC``, zeroes ``COUNTER`` and then increments it at every interrupt, the
BIOS timer's 18.2 a second, halted in between, so that a nested guest costs its host next to no
CPU). A reset would run the boot sector again: a new stamp and the counter back at zero. At 16
MiB, a pattern the guest never touches is written into its RAM from outside.

Probes read the guest RAM where it lives: the memfd luod-qemu made, through
``/proc/QEMU_PID/fd/RAM_FD`` as its status file (``RUNTIME_DIR/VM.json``) names them.

    python -m tests.vm.l2guest floppy PATH         # and prints QEMU's arguments, one per line
    python -m tests.vm.l2guest args PATH           # QEMU arguments, one per line
    python -m tests.vm.l2guest probe STATUS [--write-pattern]   # JSON: counter, stamp, ...
    python -m tests.vm.l2guest twice STATUS OUT1 OUT2 [--write-pattern]  # probes 1 s apart
    python -m tests.vm.l2guest launch OUT QEMU-ARGS...

``launch`` stands in for the QEMU binary (``luod-qemu --qemu``): it probes the RAM QEMU is given
(``mem-path=/proc/self/fd/N``) into OUT before QEMU runs, then execs the real QEMU. After the
kexec that is the RAM exactly as LUO carried it: the counter as it was at QMP ``stop``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from luod.qemu.canary import COUNTER, MAGIC, STAMP, qemu_args, write_floppy

PATTERN_OFFSET, PATTERN_SIZE = 16 << 20, 4 << 20
QEMU = "qemu-system-x86_64"


def pattern() -> bytes:
    return hashlib.shake_256(b"luod-qemu L2 pattern").digest(PATTERN_SIZE)


class GuestRam:
    """The RAM of a VM luod-qemu runs, read (and written) through its QEMU's fd."""

    def __init__(self, status: Path | None, path: Path | None = None) -> None:
        info = json.loads(status.read_text()) if status else {"phase": "launch"}
        self.path = path or Path(f"/proc/{info['qemu_pid']}/fd/{info['ram_fd']}")
        self.phase = str(info["phase"])

    def read(self, offset: int, size: int) -> bytes:
        with self.path.open("rb") as ram:
            ram.seek(offset)
            return ram.read(size)

    def word(self, offset: int, size: int = 4) -> int:
        return int.from_bytes(self.read(offset, size), "little")

    def write_pattern(self) -> None:
        with self.path.open("r+b") as ram:
            ram.seek(PATTERN_OFFSET)
            ram.write(pattern())

    def probe(self) -> dict[str, Any]:
        return {
            "counter": self.word(COUNTER),
            "stamp": self.word(STAMP, 8),
            "magic": self.read(MAGIC, 4).decode("latin-1"),
            "pattern_sha256": hashlib.sha256(self.read(PATTERN_OFFSET, PATTERN_SIZE)).hexdigest(),
            "phase": self.phase,
            "at": time.time(),
        }


def ram_given_to(qemu_args: list[str]) -> GuestRam:
    """The guest RAM among QEMU's arguments (``mem-path=/proc/self/fd/N``, as luod-qemu
    passes it), for a launcher that stands in for the QEMU binary."""
    found = re.search(r"mem-path=(/proc/self/fd/[0-9]+)", " ".join(qemu_args))
    assert found, "no mem-path=/proc/self/fd/N among QEMU's arguments"
    return GuestRam(None, Path(found[1]))


def exec_qemu(qemu_args: list[str]) -> None:
    os.execvp(QEMU, [QEMU, *qemu_args])


def wait_for_boot(ram: GuestRam, timeout: float = 120) -> None:
    """Until the boot code ran (the magic is in RAM): SeaBIOS first, under nested TCG."""
    deadline = time.monotonic() + timeout
    while ram.read(MAGIC, 4) != b"LUOD":
        if time.monotonic() > deadline:
            raise TimeoutError("the L2 guest never ran its boot sector")
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    command, path = argv[0], Path(argv[1])
    if command == "floppy":
        write_floppy(path)
        print("\n".join(qemu_args(path)))
    elif command == "args":
        print("\n".join(qemu_args(path)))
    elif command == "launch":
        path.write_text(json.dumps(ram_given_to(argv[2:]).probe()))
        exec_qemu(argv[2:])
    elif command == "twice":  # one process (a python start is seconds in a nested guest)
        ram = GuestRam(path)
        wait_for_boot(ram)
        if "--write-pattern" in argv:
            ram.write_pattern()
        first = ram.probe()
        Path(argv[2]).write_text(json.dumps(first))
        time.sleep(1)
        second = ram.probe()
        Path(argv[3]).write_text(json.dumps(second))
        sha = second["pattern_sha256"][:16]
        print(f"counter {first['counter']:#x}, one second later {second['counter']:#x}; "
              f"boot stamp {second['stamp']:#x}; pattern sha256 {sha}…")  # fmt: skip
    elif command == "probe":
        ram = GuestRam(path)
        if "--write-pattern" in argv:
            ram.write_pattern()
        print(json.dumps(ram.probe()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
