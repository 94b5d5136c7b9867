"""Fuzz target: a running luod's VMM socket (``luod --simulate`` in a subprocess).

Peers on up to four connections send scripts (tests.fuzz.messages.script: schema-built
requests, valid or hostile, mutated, cut, glued, junk) with random fds attached (memfds of
every shape, pipes, sockets, O_PATH, directories, eventfds, LUO session fds: tests.fuzz.fds).
One input is one ``sendmsg``. After each script the peer reads until every line it sent is
answered (each newline is one frame, so one reply) or luod hangs up (a framing error); no
answer within ``TIMEOUT`` is a hang. luod dying is a crash (the input kept, luod started
again). Kernel paths offered include a FIFO (nothing writes it: a hang while luod opens it,
released by the fuzzer) and /dev/zero (``--no-special`` leaves both out); the valid image only
in well-formed dry runs (a real update would end the simulated kernel; the update afterwards
is the well-behaved VMM's).

``python -m tests.fuzz.socket_target --inputs 100000 [--seed S]``
"""

from __future__ import annotations

import argparse
import array
import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from luod.kernel import OwnedFd
from tests.contract.harness import FAKE_BZIMAGE
from tests.fuzz import luod_process
from tests.fuzz.draw import RandomDraw, one_in
from tests.fuzz.fds import FdMaker
from tests.fuzz.messages import Chunk, script
from tests.fuzz.outcome import SUMMARY, Outcome, scan_log

TIMEOUT = 10.0  # seconds for the answers to one script
GIVE_UP = 20  # crashes and hangs: the run stops (each hang costs TIMEOUT)
CONNECTIONS = 4


class LuodExited(Exception):
    pass


class Peer:
    """One fuzzing connection: what it sent (newlines) and what came back (replies)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(TIMEOUT)
        self.sent = 0
        self.answered = 0
        self.buffer = b""
        self.gone = False
        self.refused = 0  # sendmsg calls our own kernel refused

    def send(self, data: bytes, fds: list[OwnedFd]) -> None:
        rights = array.array("i", [fd.fileno() for fd in fds]).tobytes()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)] if fds else []
        try:
            self.sock.sendmsg([data], ancillary)
        except (BrokenPipeError, ConnectionResetError):
            self.gone = True  # luod hung up after a framing error: its last answer said why
            return
        except OSError as exc:  # our kernel refused to pass these fds (EINVAL, ETOOMANYREFS)
            if exc.errno not in (errno.EINVAL, errno.ETOOMANYREFS):
                raise
            self.refused += 1
            return
        self.sent += data.count(b"\n")

    def drain(self) -> bool:
        """Read answers until every line is answered or luod hung up; False on a timeout."""
        deadline = time.monotonic() + TIMEOUT
        while not self.gone and self.answered < self.sent:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data, ancillary, _, _ = self.sock.recvmsg(1 << 17, socket.CMSG_SPACE(64 * 4))
            except TimeoutError:
                return False
            except ConnectionResetError:
                data, ancillary = b"", []
            _close_received(ancillary)
            if not data:
                self.gone = True
                break
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\n")
            self.answered += sum(1 for line in lines if _is_reply(line))
        return True

    def close(self) -> None:
        self.sock.close()


def _is_reply(line: bytes) -> bool:
    message: Any = json.loads(line)
    assert isinstance(message, dict) and ("reply" in message or "event" in message), line[:200]
    return "reply" in message


def _close_received(ancillary: list[tuple[int, int, bytes]]) -> None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            for fd in fds:
                os.close(fd)


class Fuzzer:
    def __init__(
        self, scratch: Path, seed: int | str, outcome: Outcome, special_files: bool
    ) -> None:
        self.scratch = scratch
        self.draw = RandomDraw(seed)
        self.outcome = outcome
        self.fds = FdMaker(scratch / "fds")
        self.image = scratch / "bzImage"
        self.image.write_bytes(FAKE_BZIMAGE)
        self.fifo = scratch / "fifo"
        os.mkfifo(self.fifo)
        junk = scratch / "junk"
        junk.write_bytes(b"MZ not a kernel" * 100)
        # not the valid image (a KEXEC of it ends the simulated kernel): see dry_run
        special = [str(self.fifo), "/dev/zero"]  # issue 13 finding 2: luod blocks, reads forever
        paths = [str(junk), str(scratch), "/dev/null", *(special if special_files else [])]
        self.paths = tuple(paths)
        self.daemon = luod_process.start(scratch / "luod")
        self.peers: list[Peer | None] = [None] * CONNECTIONS
        self.lives = 1

    def run(self, inputs: int) -> None:
        while self.outcome.inputs < inputs:
            if self.outcome.hangs + self.outcome.crash_count >= GIVE_UP:
                self.outcome.notes.append(f"stopped after {GIVE_UP} crashes and hangs")
                return
            chunks = script(self.draw, CONNECTIONS, requests=6, paths=self.paths)
            chunks += [self.dry_run()] if one_in(self.draw, 20) else []
            self.play(chunks[: inputs - self.outcome.inputs])

    def play(self, chunks: list[Chunk]) -> None:
        used: set[int] = set()
        for chunk in chunks:
            if not self.daemon.alive():
                break
            try:
                peer = self.peer(chunk.conn)
            except OSError:  # luod is going away: its exit is the crash
                self.daemon.process.wait(timeout=10)
                break
            used.add(chunk.conn)
            fds = self.fds.draw(self.draw, chunk.fds, chunk.preserving)
            try:
                peer.send(chunk.data, fds)
            except TimeoutError:  # luod stopped reading this connection
                self.hung(chunk.conn, chunks)
            finally:
                for fd in fds:
                    fd.close()
            self.outcome.inputs += 1
        for conn in used:
            if self.daemon.alive():
                self.answers(conn, chunks)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.daemon.process.wait(
                timeout=0.05 if any(p is None or p.gone for p in self.peers) else 0
            )
        if not self.daemon.alive():
            self.crashed(chunks)
        elif one_in(self.draw, 20):
            self.hang_up(self.draw.below(CONNECTIONS))

    def dry_run(self) -> Chunk:
        """A well-formed UPDATE of the valid image, a dry run (a real one would end the
        simulated kernel), on a random connection."""
        message = {"cmd": "UPDATE", "kernel": str(self.image), "dry_run": True}
        message["allow_unknown_abi"] = bool(self.draw.below(2))
        return Chunk(self.draw.below(CONNECTIONS), json.dumps(message).encode() + b"\n")

    def peer(self, conn: int) -> Peer:
        peer = self.peers[conn]
        if peer is None or peer.gone:
            if peer is not None:
                peer.close()
            peer = self.peers[conn] = Peer(self.daemon.socket)
        return peer

    def answers(self, conn: int, chunks: list[Chunk]) -> None:
        peer = self.peers[conn]
        if peer is None or peer.drain():
            return
        self.hung(conn, chunks)

    def hung(self, conn: int, chunks: list[Chunk]) -> None:
        self.outcome.hangs += 1
        self.keep("hang", chunks)
        self.release_fifo()
        self.hang_up(conn)

    def release_fifo(self) -> bool:
        """luod waits in open() of the FIFO (issue 13 finding 2): let it go, as often as it
        opens it again (the preflight reads an image more than once)."""
        released = False
        for _ in range(40):
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: nobody has it open for reading, for now
                time.sleep(0.05)
                continue
            released = True
        return released

    def hang_up(self, conn: int) -> None:
        if (peer := self.peers[conn]) is not None:
            peer.close()
            self.peers[conn] = None

    def crashed(self, chunks: list[Chunk]) -> None:
        text = self.daemon.log.read_text(errors="replace")
        where = re.findall(r'File "[^"]*?(luod/[^"]+)", line (\d+)', text) or [("?", "?")]
        last = [line.strip(" |+-") for line in text.splitlines() if line.strip(" |+-")][-1:]
        what = re.sub(r"\d+", "N", last[0] if last else "?")  # one signature per kind
        signature = f"luod exited: {what} at {':'.join(where[-1])}"
        self.outcome.crash(LuodExited(signature), self.record(chunks), None, signature)
        scan_log(self.daemon.log, self.outcome)
        self.keep("crash", chunks)
        for conn in range(CONNECTIONS):
            self.hang_up(conn)
        self.lives += 1
        self.daemon = luod_process.start(self.scratch / f"luod-{self.lives}")

    def keep(self, kind: str, chunks: list[Chunk]) -> None:
        path = self.scratch / f"{kind}-{self.outcome.inputs}.json"
        path.write_bytes(self.record(chunks))
        self.outcome.notes.append(f"{kind} at input {self.outcome.inputs}: {path}")

    @staticmethod
    def record(chunks: list[Chunk]) -> bytes:
        return json.dumps(
            [{"conn": c.conn, "fds": c.fds, "data": c.data.decode("latin-1")} for c in chunks]
        ).encode()

    def close(self) -> None:
        for conn in range(CONNECTIONS):
            self.hang_up(conn)
        time.sleep(0.2)
        if self.release_fifo():  # a hang no script waited for (its peer had hung up)
            self.outcome.hangs += 1
            self.outcome.notes.append("luod was left in open() of the FIFO")


def run(inputs: int, seed: int | str, scratch: Path, special_files: bool = True) -> Outcome:
    outcome = Outcome("socket")
    fuzzer = Fuzzer(scratch, seed, outcome, special_files)
    before = luod_process.baseline(fuzzer.daemon)
    try:
        fuzzer.run(inputs)
    finally:
        fuzzer.close()
        luod_process.finish(fuzzer.daemon, outcome, before)
        luod_process.stop(fuzzer.daemon)
        fuzzer.fds.close()
    return outcome.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", default="luod")
    parser.add_argument(
        "--no-special", action="store_true", help="offer no FIFO or /dev/zero as a kernel path"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # luod is stopped on the way out
    scratch = Path(tempfile.mkdtemp(prefix="luod-fuzz-socket-", dir=luod_process.scratch_dir()))
    outcome = run(args.inputs, args.seed, scratch, special_files=not args.no_special)
    print(SUMMARY + outcome.to_json(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
