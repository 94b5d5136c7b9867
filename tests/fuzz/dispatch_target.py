"""Fuzz target: the VMM codec and dispatcher, in process, coverage-guided (atheris).

An input is a script of chunks (tests.fuzz.messages.script: schema-built requests, valid or
hostile, mutated, cut, glued) sent on one or two connections, with fds of every kind attached
(tests.fuzz.fds). Each chunk goes through a ``FrameReader`` as the server feeds it, and every
frame through ``VmmServer._answer``, the server's own dispatch, to the real ``LuodHandler`` of
a ``Daemon`` on the simulator (``Daemon.startup``, no sockets). What must hold:
- nothing but ``LuodError`` leaves ``feed``; nothing at all leaves ``_answer`` (an exception
  there ends the connection's task, then luod: issue 13 finding 1);
- no answer says ``internal`` (a handler bug, logged with a traceback);
- every fd attached is closed by the end of the input (luod keeps duplicates of what it
  preserves), none twice.

Before the coverage-guided inputs, ``systematic()`` sends every request type with each field
hostile in turn (30,000 × 'é', 70,000 bytes, lone surrogates, 1e400, deep nesting...).
VMs accumulate over inputs (state is part of what is fuzzed); before fds and RSS are measured,
every VM is dropped through the handler.

``python -m tests.fuzz.dispatch_target -runs=100000 [libFuzzer options]``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import structlog

from luod.core.access import Peer
from luod.errors import LuodError
from luod.kernel import Backend, OwnedFd
from luod.vmm import codec
from luod.vmm.server import VmmServer
from tests.fuzz.coverage import fuzz
from tests.fuzz.draw import Draw, ProviderDraw, RandomDraw
from tests.fuzz.fds import FdMaker
from tests.fuzz.messages import Chunk, script, systematic
from tests.fuzz.outcome import Outcome, scan_log
from tests.rest.harness import Luod

EPOCH = 300
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None  # the manifest is rewritten often
"""Unless LUOD_FUZZ_SCRATCH names the parent (luod_process.SCRATCH_ENV; not imported here:
luod.vmm must be imported first by the instrumentation)."""


class Conn:
    """What the handler needs of a connection (luod.daemon.connections.VmmConnection)."""

    def __init__(self) -> None:
        self.peer = Peer(0, 0, os.getpid())
        self.subscribed: set[str] = set()
        self.capabilities: frozenset[str] = frozenset()
        self.closed = False
        self.reader = codec.FrameReader()

    def push(self, message: codec.Outgoing) -> None:
        for fd in message.fds:
            fd.close()


class Target:
    """A luod (``Daemon.startup`` on the simulator, no sockets) and the server's dispatch to
    its handler. Every ``EPOCH`` inputs the VMs are dropped and the luod replaced by a fresh
    one (its history only grows: issue 13 finding 11); the old one is shut down, so whatever
    it leaked stays counted in this process's fds and RSS."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.fds = FdMaker(scratch / "fds")
        junk = scratch / "junk"
        junk.write_bytes(b"MZ not a kernel" * 100)
        self.paths = (str(junk), str(scratch), "/dev/null", str(scratch / "missing"))
        self.epoch = 0
        self.inputs = 0
        self._open()

    def _open(self) -> None:
        self.epoch += 1
        state = self.scratch / f"luod-{self.epoch}"
        self.luod = self.loop.run_until_complete(_started(state))
        self.server = VmmServer(socket.socket(socket.AF_UNIX), self.luod.handler)

    def run(self, draw: Draw) -> None:
        self.inputs += 1
        if self.inputs % EPOCH == 0:
            self.settle()
            self.server.listener.close()
            self.luod.close()
            _power_off(self.luod.daemon.backend)  # the simulated kernel: luod's exit
            shutil.rmtree(self.luod.state, ignore_errors=True)
            self._open()
        self.play(script(draw, connections=2, requests=8, paths=self.paths), draw)

    def play(self, chunks: list[Chunk], draw: Draw) -> None:
        conns = [Conn(), Conn()]
        made: list[OwnedFd] = []
        try:
            for chunk in chunks:
                fds = self.fds.draw(draw, chunk.fds, chunk.preserving)
                made += fds
                self.feed(conns[chunk.conn], chunk.data, fds)
        finally:
            for conn in conns:
                conn.reader.close()
                conn.closed = True
                self.luod.handler.disconnected(conn)
        lost = [fd for fd in made if not fd.closed]
        for fd in lost:
            fd.close()
        assert not lost, f"{len(lost)} of {len(made)} attached fds were left open"

    def feed(self, conn: Conn, data: bytes, fds: list[OwnedFd]) -> None:
        if conn.closed:
            for fd in fds:
                fd.close()
            return
        try:
            frames = conn.reader.feed(data, fds)
        except LuodError as exc:  # framing lost: the server answers once and hangs up
            codec.encode(codec.error_reply(None, None, exc))
            conn.reader.close()
            conn.closed = True
            return
        for frame in frames:
            answer = self.loop.run_until_complete(self.server._answer(conn, frame))  # type: ignore[arg-type]
            conn.push(answer)
            reply = json.loads(answer.line)
            code = reply.get("error", {}).get("code") if not reply.get("ok") else None
            assert code != "internal", f"internal error: {reply['error']['message'][:300]}"

    def settle(self) -> None:
        """Drop every VM (through the handler, as a VMM would): what luod holds goes back."""
        conn = Conn()
        for vm_id in list(self.luod.registry.vms):
            line = json.dumps({"cmd": "DROP", "id": vm_id}).encode()
            self.loop.run_until_complete(self.server._answer(conn, codec.Frame(line)))  # type: ignore[arg-type]
        self.luod.handler.disconnected(conn)
        self.loop.run_until_complete(asyncio.sleep(0.05))  # the simulator's release thread


def _power_off(backend: Backend) -> None:
    close = getattr(backend.platform, "close", None)  # the simulator's (luod.kernel.sim)
    if close is not None:
        close()


async def _started(state: Path) -> Luod:
    return Luod(state)  # Daemon.startup wants a running loop (its update tasks)


TARGET: Target | None = None


def target() -> Target:
    global TARGET
    if TARGET is None:
        scratch = Path(
            tempfile.mkdtemp(
                prefix="luod-fuzz-dispatch-", dir=os.environ.get("LUOD_FUZZ_SCRATCH") or SCRATCH
            )
        )
        _log_to(scratch / "luod.log")
        TARGET = Target(scratch)
    return TARGET


def _log_to(path: Path) -> None:
    """luod's JSON log (luod.daemon.logs) into ``path``, warnings and errors: tracebacks are
    counted there."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.WriteLoggerFactory(file=path.open("a", encoding="utf-8")),
        cache_logger_on_first_use=True,
    )


def finish(outcome: Outcome) -> None:
    scan_log(target().scratch / "luod.log", outcome)
    outcome.notes.append(f"{target().epoch} luods of {EPOCH} inputs each")


def body(data: bytes) -> None:
    import atheris

    target().run(ProviderDraw(atheris.FuzzedDataProvider(data)))


def prelude() -> list[tuple[bytes, Callable[[], None]]]:
    """``systematic()``'s requests, one input each, with the fds PRESERVE names attached."""
    draw = RandomDraw("systematic")
    return [
        (req.line, _player([Chunk(0, req.line + b"\n", req.files, True)], draw))
        for req in systematic()
    ]


def _player(chunks: list[Chunk], draw: Draw) -> Callable[[], None]:
    return lambda: target().play(chunks, draw)


def main(argv: list[str] | None = None) -> None:
    fuzz(
        "dispatch",
        body,
        sys.argv[1:] if argv is None else argv,
        settle=lambda: target().settle(),
        finish=finish,
        prelude=prelude(),
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
