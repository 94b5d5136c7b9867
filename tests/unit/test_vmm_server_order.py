"""The order in which the VMM server takes clients and requests after a kexec: every client
waiting is accepted in one turn, and a deferred request (luod's DONE) goes after the others
read with it (luod.vmm.lull)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from luod.vmm import codec
from luod.vmm.server import Connection, VmmServer


class Recorder:
    """A handler that answers at once and remembers the order of the requests."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, conn: Connection, request: codec.Request) -> codec.Outgoing:
        self.seen.append(request.cmd)
        return codec.encode(codec.ok_reply(request.cmd, request.seq))

    def disconnected(self, conn: Connection) -> None:
        pass


def listening(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    listener.setblocking(False)
    return listener


def connected(path: Path) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(path))
    return client


def test_every_waiting_client_is_accepted_in_one_turn(tmp_path: Path) -> None:
    listener = listening(tmp_path / "s")
    clients = [connected(tmp_path / "s") for _ in range(20)]

    async def body() -> int:
        server = VmmServer(listener, Recorder())
        async with asyncio.TaskGroup() as tasks:
            server._tasks = tasks
            server._accept(asyncio.get_running_loop())
            accepted = len(server.connections)
            for conn in list(server.connections):
                conn.close()
        return accepted

    try:
        assert asyncio.run(body()) == 20  # was one a turn: RECLAIMs queued behind accepts
    finally:
        for client in clients:
            client.close()
        listener.close()


def line(cmd: str, seq: int) -> bytes:
    return json.dumps({"cmd": cmd, "seq": seq, "id": "vm0"}).encode() + b"\n"


def served_order(path: Path, deferred: frozenset[type[codec.Request]]) -> list[str]:
    """Two clients: one sends DONE, then the other RECLAIM, before the server's next turn;
    the order in which the handler got them."""
    listener = listening(path)
    recorder = Recorder()

    async def body() -> None:
        server = VmmServer(listener, recorder, deferred=deferred)
        serving = asyncio.create_task(server.serve())
        finishing, reclaiming = connected(path), connected(path)
        finishing.setblocking(False)
        reclaiming.setblocking(False)
        while len(server.connections) < 2:
            await asyncio.sleep(0.001)
        finishing.sendall(line("DONE", 1))  # first in the sockets
        reclaiming.sendall(line("RECLAIM", 2))
        for client in (finishing, reclaiming):
            reply = await asyncio.get_running_loop().sock_recv(client, 4096)
            assert json.loads(reply)["ok"]
            client.close()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)

    try:
        asyncio.run(body())
    finally:
        listener.close()
    return recorder.seen


def test_a_done_read_with_a_reclaim_is_served_after_it(tmp_path: Path) -> None:
    assert served_order(tmp_path / "s", frozenset({codec.Done})) == ["RECLAIM", "DONE"]


def test_without_deferral_requests_go_in_the_order_read(tmp_path: Path) -> None:
    """The control: the same two clients, nothing deferred."""
    assert served_order(tmp_path / "s", frozenset()) == ["DONE", "RECLAIM"]
