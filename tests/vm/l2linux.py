"""A small Linux L2 guest that proves a VM went on across a live update: its uptime and a value
in its memory go on, where a reset would start both again.

The guest is the LUO test kernel itself (any x86-64 kernel with an initramfs and a serial
console will do) with an initramfs whose ``/init`` is a static ELF of 114 bytes of x86-64 code,
built here from bytes (no compiler needed). It writes a 16-byte magic into its data, then, ten
times a second, reads ``CLOCK_BOOTTIME`` into the data beside it and increments a counter:

    data + 0   magic "LUOD-L2-LINUX:-)" (built at run time from two XORed halves, so that
               only the running process's page holds it, never the binary)
    data + 16  counter (u64), incremented after each clock read
    data + 24  struct timespec: the guest's uptime at the last increment

Probes find the magic in the guest RAM (the memfd luod-qemu made, through ``/proc/QEMU/fd/N``)
and read the counter and the uptime there: no agent in the guest, no serial line to parse.

    python -m tests.vm.l2linux initrd PATH KERNEL [CONSOLE]  # writes PATH, prints QEMU's
                                                 # arguments (its serial appended to CONSOLE)
    python -m tests.vm.l2linux twice STATUS OUT1 OUT2   # probes one second apart
    python -m tests.vm.l2linux launch OUT QEMU-ARGS...  # probes the RAM QEMU gets, execs QEMU
"""

from __future__ import annotations

import gzip
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

from tests.vm.l2guest import GuestRam, exec_qemu, ram_given_to

MAGIC = b"LUOD-L2-LINUX:-)"
KEYS = (0x5A17C0DE600DF00D, 0x0BADC0FFEE15D00D)
BASE = 0x400000
HEADERS = 64 + 56  # one ELF header, one program header
DATA_SIZE = 40
CHUNK = 4 << 20


def _code() -> bytes:
    lo, hi = struct.unpack("<QQ", MAGIC)
    halves = [struct.pack("<Q", key) + struct.pack("<Q", half ^ key) for key, half in
              zip(KEYS, (lo, hi), strict=True)]  # fmt: skip
    return b"".join((
        bytes.fromhex("488d1d6b000000"),  # lea rbx, [rip + data]
        b"\x48\xb8" + halves[0][:8], b"\x48\xb9" + halves[0][8:],  # movabs rax, k; movabs rcx
        bytes.fromhex("4831c8488903"),  # xor rax, rcx; mov [rbx], rax
        b"\x48\xb8" + halves[1][:8], b"\x48\xb9" + halves[1][8:],
        bytes.fromhex("4831c848894308"),  # xor rax, rcx; mov [rbx + 8], rax
        bytes.fromhex(
            "b8e4000000"  # again: mov eax, 228 (clock_gettime)
            "bf07000000"  # mov edi, 7 (CLOCK_BOOTTIME)
            "488d7318"  # lea rsi, [rbx + 24]
            "0f05"  # syscall
            "48ff4310"  # inc qword [rbx + 16]
            "b823000000"  # mov eax, 35 (nanosleep)
            "488d3d06000000"  # lea rdi, [rip + req]
            "31f6"  # xor esi, esi
            "0f05"  # syscall
            "ebda"  # jmp again
        ),
        struct.pack("<QQ", 0, 100_000_000),  # req: 100 ms
    ))  # fmt: skip


def init_elf() -> bytes:
    """A static x86-64 ELF: one RWX segment, the data zero-filled after the code."""
    code = _code()
    size = HEADERS + len(code)
    header = struct.pack(
        "<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0,  # 64-bit, LSB, version 1
        2, 0x3E, 1, BASE + HEADERS, 64, 0, 0, 64, 56, 1, 0, 0, 0,
    )  # fmt: skip
    segment = struct.pack("<IIQQQQQQ", 1, 7, 0, BASE, BASE, size, size + DATA_SIZE, 0x1000)
    return header + segment + code


def _cpio_entry(name: str, data: bytes, mode: int) -> bytes:
    fields = (0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
    entry = ("070701" + "".join(f"{v:08x}" for v in fields)).encode() + name.encode() + b"\0"
    entry += b"\0" * (-len(entry) % 4) + data
    return entry + b"\0" * (-len(entry) % 4)


def write_initrd(path: Path) -> Path:
    archive = _cpio_entry("init", init_elf(), 0o100755) + _cpio_entry("TRAILER!!!", b"", 0)
    path.write_bytes(gzip.compress(archive, mtime=0))
    return path


def qemu_args(initrd: Path, kernel: Path, console: Path | None = None) -> list[str]:
    """With ``console``, the guest kernel's messages go there (appended across the kexec): the
    evidence when its boot stalls under nested TCG."""
    args = [
        "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none",
        "-kernel", str(kernel), "-initrd", str(initrd),
    ]  # fmt: skip
    if console is None:  # each one word: the stage scripts split arguments at whitespace
        return [*args, "-append", "quiet"]
    serial = ["-chardev", f"file,id=con0,path={console},append=on", "-serial", "chardev:con0"]
    return [*args, *serial, "-append", "console=ttyS0"]


def find(ram: GuestRam) -> int | None:
    with ram.path.open("rb") as memory:
        offset, tail = 0, b""
        while chunk := memory.read(CHUNK):
            at = (tail + chunk).find(MAGIC)
            if at >= 0:
                return offset - len(tail) + at
            offset += len(chunk)
            tail = chunk[-len(MAGIC) :]
    return None


def probe(ram: GuestRam, at: int) -> dict[str, Any]:
    data = ram.read(at, DATA_SIZE)
    counter, seconds, nanoseconds = struct.unpack_from("<Qqq", data, 16)
    return {
        "magic": data[:16].decode("latin-1"),
        "offset": at,
        "counter": counter,
        "uptime": seconds + nanoseconds / 1e9,
        "phase": ram.phase,
        "at": time.time(),
    }


def wait_for_init(ram: GuestRam, timeout: float = 600) -> int:
    """Until the guest's /init runs: its kernel boots first, under nested TCG."""
    deadline = time.monotonic() + timeout
    while (at := find(ram)) is None or probe(ram, at)["counter"] == 0:
        if time.monotonic() > deadline:
            stalled(ram)
            raise TimeoutError("the Linux L2 guest never ran its /init")
        time.sleep(1)
    return at


def stalled(ram: GuestRam) -> None:
    """Evidence of a stall for the test's report: each of the guest's QEMU threads (state and
    where it waits, on stderr) and this kernel's CPUs and blocked tasks (sysrq l and w, on the
    console the harness keeps)."""
    pid = ram.path.parts[2] if ram.path.parts[1] == "proc" else None
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")) if pid else ():
        fields = [_read(task / name) for name in ("comm", "wchan", "stat")]
        print(f"qemu task {task.name}:", *fields, file=sys.stderr)
    for key in "lw":
        try:
            Path("/proc/sysrq-trigger").write_text(key)
        except OSError as exc:
            print(f"sysrq {key}: {exc}", file=sys.stderr)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        return f"({exc.strerror})"


def main(argv: list[str]) -> int:
    command, path = argv[0], Path(argv[1])
    if command == "initrd":
        write_initrd(path)
        console = Path(argv[3]) if len(argv) > 3 else None
        print("\n".join(qemu_args(path, Path(argv[2]), console)))
    elif command == "twice":  # one process (a python start is seconds in a nested guest)
        ram = GuestRam(path)
        at = wait_for_init(ram)
        Path(argv[2]).write_text(json.dumps(probe(ram, at)))
        time.sleep(1)
        second = probe(ram, at)
        Path(argv[3]).write_text(json.dumps(second))
        print(f"linux L2: counter {second['counter']}, uptime {second['uptime']:.2f} s")
    elif command == "launch":
        ram = ram_given_to(argv[2:])
        found_at = find(ram)
        path.write_text(
            json.dumps(probe(ram, found_at) if found_at is not None else {"magic": None})
        )
        exec_qemu(argv[2:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
