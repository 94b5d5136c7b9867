"""A VMM written only from luo-agent's README ("Client Integration"), standard library only.

It imports nothing of luod and knows nothing of its extensions: the socket
/run/luod/liveupdate.sock, newline-delimited JSON, fds via SCM_RIGHTS, four verbs. Run it with
``python3 -I`` so that not even luod's package is on its path.

    run:   keep "guest RAM" (a memfd) busy; SUBSCRIBE; on START_PRESERVATION preserve the memfd
           into the session fd that came with it (LIVEUPDATE_SESSION_PRESERVE_FD), stop writing,
           record its sha256, READY; then wait for the kexec.
    claim: after the kexec, CLAIM; RETRIEVE_FD the memfd from the session fd of the reply,
           FINISH, and compare its sha256 with the record. No other verb.

Every line it reads is printed (``{"got": ...}``), so a test can tell what luod sent it.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import hashlib
import json
import os
import select
import socket
import struct
import sys
from pathlib import Path
from typing import Any

# <linux/liveupdate.h>: _IO(0xBA, nr), the session ioctls and their argument structs.
PRESERVE_FD = 0xBA40  # struct { __u32 size; __s32 fd; __u64 token; }
RETRIEVE_FD = 0xBA41  # struct { __u32 size; __s32 fd (out); __u64 token; }
FINISH = 0xBA42  # struct { __u32 size; __u32 reserved; }
FD_TOKEN = struct.Struct("=IiQ")
FINISH_ARG = struct.Struct("=II")
TOKEN = 1
CHUNK = 1 << 20


class Luod:
    """The socket: JSON lines out, JSON lines (and the fds that came with them) in."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buffer = b""
        self.fds: list[int] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def next_message(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next line as a dict; None when nothing came within ``timeout``."""
        while b"\n" not in self.buffer:
            if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
                return None
            data, ancillary, flags, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
            if flags & socket.MSG_CTRUNC:
                raise SystemExit("fds truncated")
            for level, kind, raw in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    self.fds.extend(array.array("i", raw[: len(raw) - len(raw) % 4]))
            if not data:
                raise SystemExit("luod closed the connection")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        say(got=message)
        return message

    def take_fd(self) -> int:
        if not self.fds:
            raise SystemExit("expected an fd from luod, none came")
        return self.fds.pop(0)


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def sha256(fd: int, size: int) -> str:
    digest = hashlib.sha256()
    for offset in range(0, size, CHUNK):
        digest.update(os.pread(fd, min(CHUNK, size - offset), offset))
    return digest.hexdigest()


def guest_ram(size: int) -> int:
    ram = os.memfd_create("luo-agent-ram", os.MFD_CLOEXEC)  # no MFD_NOEXEC_SEAL: stays writable
    os.ftruncate(ram, size)
    for offset in range(0, size, CHUNK):
        os.pwrite(ram, os.urandom(min(CHUNK, size - offset)), offset)
    return ram


def scribble(ram: int, size: int, count: int) -> None:
    """What a running guest does: change a few pages."""
    for page in range(count % 7, size // 4096, 97):
        os.pwrite(ram, count.to_bytes(8, "little"), page * 4096 + 8 * (count % 512))


def run(args: argparse.Namespace) -> int:
    ram = guest_ram(args.size)
    luod = Luod(args.socket)
    luod.send({"cmd": "SUBSCRIBE", "id": args.id})
    say(event="subscribed", id=args.id)
    writes = 0
    while True:  # the guest runs until luod asks for its memory
        message = luod.next_message(timeout=0.01)
        if message is not None and message.get("event") == "START_PRESERVATION":
            break
        scribble(ram, args.size, writes)
        writes += 1
    session = luod.take_fd()
    fcntl.ioctl(session, PRESERVE_FD, bytearray(FD_TOKEN.pack(FD_TOKEN.size, ram, TOKEN)))
    os.close(session)
    scribble(ram, args.size, writes)  # preserved pages are still the guest's until the kexec
    digest = sha256(ram, args.size)  # the guest stops here: what the next kernel must show
    record = {"id": args.id, "size": args.size, "token": TOKEN, "sha256": digest}
    Path(args.record).write_text(json.dumps(record))
    luod.send({"cmd": "READY"})
    say(event="ready", id=args.id, writes=writes + 1, sha256=digest)
    while True:  # until the kexec ends this process
        luod.next_message()


def claim(args: argparse.Namespace) -> int:
    record = json.loads(Path(args.record).read_text())
    luod = Luod(args.socket)
    luod.send({"cmd": "CLAIM", "id": args.id})
    while (message := luod.next_message()) is not None and message.get("reply") != "CLAIM":
        pass
    if not message or message.get("ok") is not True:
        say(event="refused", reply=message)
        return 1
    session = luod.take_fd()
    arg = bytearray(FD_TOKEN.pack(FD_TOKEN.size, -1, record["token"]))
    fcntl.ioctl(session, RETRIEVE_FD, arg)
    ram = FD_TOKEN.unpack(arg)[1]
    fcntl.ioctl(session, FINISH, bytearray(FINISH_ARG.pack(FINISH_ARG.size, 0)))
    os.close(session)
    size = os.fstat(ram).st_size
    digest = sha256(ram, size)
    os.close(ram)
    same = digest == record["sha256"] and size == record["size"]
    say(event="verified" if same else "mismatch", id=args.id, size=size, sha256=digest)
    return 0 if same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=("run", "claim"))
    parser.add_argument("--id", required=True)
    parser.add_argument("--size", type=lambda s: int(s.rstrip("M")) << 20, default=8 << 20)
    parser.add_argument("--record", required=True)
    parser.add_argument("--socket", default="/run/luod/liveupdate.sock")
    args = parser.parse_args()
    return run(args) if args.command == "run" else claim(args)


if __name__ == "__main__":
    sys.exit(main())
