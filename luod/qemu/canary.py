"""The QEMU canary of a qualification (issue 14 §1): the smallest real VM that shows a guest came
through a live update with its RAM intact and running on, and the probe that reads it over QMP.

The guest is a 1.44 MB floppy whose boot sector (78 bytes of real-mode code, built here from
bytes; no disk, no kernel) stores the TSC at boot in ``STAMP``, fills the 512 KiB at ``FILL``
with a pattern derived from that stamp, writes the magic ``LUOD`` in ``MAGIC`` (so the magic
means the fill is complete), zeroes ``COUNTER`` and then increments it at every interrupt (the
BIOS timer, 18.2 times a second), halted in between: next to no CPU. A reset would run the
boot sector again: a new stamp, a new pattern, the counter back at zero.

The probe reads the guest's RAM through QEMU's own monitor (QMP ``pmemsave`` on a second QMP
socket of the canary's QEMU, ``-qmp unix:PROBE``; luod-qemu keeps its own): the counter, the
stamp, the magic and the pattern's sha256, which must be the one the stamp predicts.

    python -m luod.qemu.canary run --id ID --dir DIR --probe SOCKET [--socket LUOD]
    python -m luod.qemu.canary restore --id ID --dir DIR [--socket LUOD]
    python -m luod.qemu.canary probe --probe SOCKET --dir SCRATCH [--twice SECONDS]  # JSON
    python -m luod.qemu.canary floppy PATH                        # QEMU's arguments, one a line

``run`` and ``restore`` are ``luod-qemu run`` and ``luod-qemu restore`` for the canary (its
floppy written into DIR, which outlives the kexec; its status and lock files under
``--runtime-dir``); luod starts them.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from luod.qemu.errors import QemuAdapterError
from luod.qemu.qmp import Qmp

COUNTER, STAMP, MAGIC = 0x8000, 0x8008, 0x8010
FILL, FILL_SIZE, FILL_STEP = 0x10000, 0x80000, 0x9E3779B9
MAGIC_VALUE = b"LUOD"  # the boot code's "mov dword [MAGIC]" immediate
RAM = "16M"
DEFAULT_SOCKET = "/run/luod/liveupdate.sock"  # luod-qemu's (luod.qemu.cli is imported by run
DEFAULT_QEMU = "qemu-system-x86_64"  # and restore only: a probe starts fast in a slow guest)
FLOPPY_SIZE = 1_474_560
BOOT_CODE = bytes.fromhex(
    "fa31c08ed8"  # cli; xor ax, ax; mov ds, ax
    "0f31"  # rdtsc
    "66a30880"  # mov [STAMP], eax
    "6689160c80"  # mov [STAMP + 4], edx
    "6689c3fc"  # mov ebx, eax; cld
    "ba0010"  # mov dx, 0x1000 (FILL >> 4)
    "8ec231ff"  # segment: mov es, dx; xor di, di
    "6689d866ab"  # fill: mov eax, ebx; stosd
    "6681c3b979379e"  # add ebx, FILL_STEP
    "85ff75f0"  # test di, di; jnz fill (64 KiB a segment)
    "81c20010"  # add dx, 0x1000
    "81fa009072e2"  # cmp dx, 0x9000; jb segment (8 segments: FILL_SIZE)
    "66c70610804c554f44"  # mov dword [MAGIC], "LUOD"
    "6631c066a30080"  # xor eax, eax; mov [COUNTER], eax
    "fbf4"  # again: sti; hlt (until the next interrupt: SeaBIOS's 18.2 Hz timer tick)
    "66ff060080"  # inc dword [COUNTER]
    "ebf7"  # jmp again
)


def floppy_image() -> bytes:
    sector = BOOT_CODE.ljust(510, b"\0") + b"\x55\xaa"
    return sector.ljust(FLOPPY_SIZE, b"\0")


def write_floppy(path: Path) -> Path:
    path.write_bytes(floppy_image())
    return path


def qemu_args(floppy: Path, probe: Path | None = None) -> list[str]:
    """A PC with nothing but the floppy (no display, no NIC, no serial): the least state; and
    the probe's QMP socket when given."""
    args = [
        "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none",
        "-drive", f"if=floppy,format=raw,file={floppy},readonly=on",
    ]  # fmt: skip
    return [*args, "-qmp", f"unix:{probe},server=on,wait=off"] if probe else args


def expected_fill(stamp: int) -> bytes:
    """The pattern the boot code writes at FILL: dword i is the stamp's low half + i * STEP."""
    start = stamp & 0xFFFFFFFF
    count = FILL_SIZE // 4
    words = ((start + i * FILL_STEP) & 0xFFFFFFFF for i in range(count))
    return struct.pack(f"<{count}I", *words)


@functools.lru_cache(maxsize=8)
def expected_fill_sha256(stamp: int) -> str:
    return hashlib.sha256(expected_fill(stamp)).hexdigest()


# --- the probe ------------------------------------------------------------------------------------
def observe(low: bytes) -> dict[str, Any]:
    """What guest RAM from COUNTER to the end of the fill says (pure: bytes in, facts out)."""

    def at(address: int, size: int) -> bytes:
        return low[address - COUNTER : address - COUNTER + size]

    fill = at(FILL, FILL_SIZE)
    return {
        "counter": int.from_bytes(at(COUNTER, 4), "little"),
        "stamp": int.from_bytes(at(STAMP, 8), "little"),
        "magic": at(MAGIC, 4).decode("latin-1"),  # MAGIC_VALUE once the boot code ran
        "fill_sha256": hashlib.sha256(fill).hexdigest(),
        "fill_expected": expected_fill_sha256(int.from_bytes(at(STAMP, 8), "little")),
    }


def probe(monitor: Path, scratch: Path, timeout: float = 10.0) -> dict[str, Any]:
    """The canary's RAM read over its probe QMP socket (``pmemsave``, QEMU's own command)."""
    out = scratch / f"probe-{os.getpid()}.bin"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(monitor))
    except OSError as exc:
        sock.close()
        raise QemuAdapterError(
            "probe-failed", f"cannot reach the canary's QMP at {monitor}: {exc}", "is it running?"
        ) from exc
    qmp = Qmp.handshake(sock, timeout)
    try:
        size = FILL + FILL_SIZE - COUNTER
        qmp.execute("pmemsave", {"val": COUNTER, "size": size, "filename": str(out)})
        seen = observe(out.read_bytes())
        seen["status"] = qmp.execute("query-status")["status"]
    finally:
        qmp.close()
        out.unlink(missing_ok=True)
    return {**seen, "at": time.time()}


def twice(monitor: Path, scratch: Path, apart: float, boot: float = 300.0) -> list[dict[str, Any]]:
    """Two probes ``apart`` seconds apart, once the boot code has run (its magic is there:
    SeaBIOS boots it in seconds, minutes under nested TCG)."""
    deadline = time.monotonic() + boot
    while (first := probe(monitor, scratch))["magic"] != MAGIC_VALUE.decode():
        if time.monotonic() > deadline:
            break  # the checks say what the magic was
        time.sleep(0.5)  # nothing to wait on but the guest's progress
    time.sleep(apart)
    return [first, probe(monitor, scratch)]


# --- the commands ---------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m luod.qemu.canary", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    for name in ("run", "restore", "probe"):
        each = sub.add_parser(name)
        each.add_argument("--dir", type=Path, required=True, help="the canary's directory")
        if name != "probe":
            each.add_argument("--id", required=True, help="the canary VM's id in luod")
            each.add_argument("--socket", default=DEFAULT_SOCKET, help="luod's VMM socket")
            each.add_argument("--runtime-dir", type=Path, help="luod-qemu's (default DIR/run)")
        if name != "restore":
            each.add_argument("--probe", type=Path, required=True, help="the probe QMP socket")
        if name == "probe":
            each.add_argument("--twice", type=float, metavar="SECONDS",
                              help="once the boot code ran: two probes SECONDS apart")  # fmt: skip
        if name == "run":
            each.add_argument("--qemu", default=DEFAULT_QEMU, help="the QEMU binary")
    sub.add_parser("floppy").add_argument("path", type=Path)
    return top


def luod_qemu_argv(args: argparse.Namespace) -> list[str]:
    """The luod-qemu command line of ``run`` or ``restore``."""
    runtime = args.runtime_dir or args.dir / "run"
    common = ["--id", args.id, "--socket", args.socket, "--runtime-dir", str(runtime)]
    if args.command == "restore":
        return ["restore", *common]
    floppy = write_floppy(args.dir / "floppy.img")
    guest = qemu_args(floppy, args.probe)
    return ["run", *common, "--ram", RAM, "--qemu", args.qemu, "--", *guest]


def say(seen: object) -> bool:
    """The probe's answer, one JSON line to luod; False when luod, which reads it, is gone
    (killed during the step): no traceback for that, in the log luod shares with it."""
    try:
        print(json.dumps(seen), flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit's flush
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "floppy":
        print("\n".join(qemu_args(write_floppy(args.path))))
        return 0
    if args.command == "probe":
        try:
            seen = (
                twice(args.probe, args.dir, args.twice)
                if args.twice
                else probe(args.probe, args.dir)
            )
        except (QemuAdapterError, OSError) as exc:
            say({"error": str(exc)})
            return 1
        return 0 if say(seen) else 1
    from luod.qemu import cli  # luod-qemu itself

    args.dir.mkdir(parents=True, exist_ok=True)
    return cli.main(luod_qemu_argv(args))


if __name__ == "__main__":
    sys.exit(main())
