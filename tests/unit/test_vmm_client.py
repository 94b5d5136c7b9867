"""luod.vmm.client against a tiny fake luod in a thread: real AF_UNIX sockets, real fds."""

from __future__ import annotations

import array
import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import codec
from luod.vmm.client import AsyncClient, Client, ConnectionBroken, Event

pytestmark = pytest.mark.unit
Answer = Callable[[codec.Request], list[codec.Outgoing]]


def memfd(content: bytes) -> OwnedFd:
    fd = OwnedFd(os.memfd_create("test", os.MFD_CLOEXEC))
    os.write(fd.fileno(), content)
    return fd


def content(fd: OwnedFd | int) -> bytes:
    return os.pread(fd if isinstance(fd, int) else fd.fileno(), 1 << 16, 0)


def reply(request: codec.Request, fds: tuple[OwnedFd, ...] = (), **fields: Any) -> codec.Outgoing:
    return codec.encode(codec.ok_reply(request.cmd, request.seq, fields), fds)


def refuse(request: codec.Request, error: LuodError) -> codec.Outgoing:
    return codec.encode(codec.error_reply(request.cmd, request.seq, error))


class FakeLuod:
    """luod's end of a connection: decodes each request with the codec, sends what ``answer``
    returns (events, then the reply), and notes what it saw. ``answer`` runs in the thread."""

    def __init__(self, answer: Answer, listen: Path | None = None) -> None:
        self.answer = answer
        self.requests: list[codec.Request] = []
        self.seen: dict[str, Any] = {}
        self.failure: BaseException | None = None
        if listen is None:
            self.client_sock: socket.socket | None
            self.client_sock, self.sock = socket.socketpair()
            self.listener = None
        else:
            self.client_sock, self.listener = None, socket.socket(socket.AF_UNIX)
            self.listener.bind(str(listen))
            self.listener.listen()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def push(self, out: codec.Outgoing) -> None:
        rights = array.array("i", [fd.fileno() for fd in out.fds]).tobytes()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)] if out.fds else []
        self.sock.sendmsg([out.line], ancillary)
        for fd in out.fds:
            fd.close()

    def join(self) -> None:
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        try:
            if self.listener is not None:
                with self.listener:
                    self.sock, _ = self.listener.accept()
            with self.sock:
                self._serve()
        except BaseException as exc:
            self.failure = exc

    def _serve(self) -> None:
        reader = codec.FrameReader()
        try:
            while True:
                data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
                fds = [OwnedFd(n) for _, _, raw in ancillary for n in array.array("i", raw)]
                if not data:
                    return
                for frame in reader.feed(data, fds):
                    self._handle(codec.decode_request(frame))
        finally:
            reader.close()

    def _handle(self, request: codec.Request) -> None:
        self.requests.append(request)
        try:
            for out in self.answer(request):
                self.push(out)
        finally:
            for fd in request.fds:
                fd.close()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    before = open_fds()
    yield
    assert open_fds() <= before


@pytest.fixture
def luod(no_fd_leak: None) -> Iterator[Callable[[Answer], tuple[FakeLuod, Client]]]:
    made: list[tuple[FakeLuod, Client]] = []

    def start(answer: Answer) -> tuple[FakeLuod, Client]:
        fake = FakeLuod(answer)
        assert fake.client_sock is not None
        made.append((fake, Client(sock=fake.client_sock, timeout=10)))
        return made[-1]

    yield start
    for fake, client in made:
        client.close()
        fake.join()


# --- the blocking client --------------------------------------------------------------------
def test_preserve_sends_the_fds_with_the_frame(luod: Any) -> None:
    def answer(request: codec.Request) -> list[codec.Outgoing]:
        assert isinstance(request, codec.Preserve)
        fake.seen["content"] = [content(fd) for fd in request.fds]
        files = [{"name": s.name, "token": i, "kind": s.kind, "size": 9}
                 for i, s in enumerate(request.files, start=1)]  # fmt: skip
        return [reply(request, files=files)]

    fake, client = luod(answer)
    with memfd(b"guest ram") as ram0, memfd(b"more ram!") as ram1, memfd(b"a vfio fd") as vfio:
        files = client.preserve("vm1", {"ram0": ram0, "ram1": ram1.fileno(), "dev": (vfio, "vfio")})
        assert not ram0.closed  # the caller's fds stay the caller's
    assert [f["token"] for f in files] == [1, 2, 3]
    (request,) = fake.requests
    assert isinstance(request, codec.Preserve) and request.id == "vm1"
    assert [(s.name, s.kind) for s in request.files] == [
        ("ram0", "memfd"),
        ("ram1", "memfd"),
        ("dev", "vfio"),
    ]
    assert fake.seen["content"] == [b"guest ram", b"more ram!", b"a vfio fd"]


def test_reclaim_returns_owned_fds_by_name(luod: Any) -> None:
    def answer(request: codec.Request) -> list[codec.Outgoing]:
        fds = (memfd(b"zero"), memfd(b"one"))
        files = [
            {"name": "ram0", "kind": "memfd", "size": 4},
            {"name": "ram1", "kind": "memfd", "size": 3},
        ]
        return [reply(request, fds, files=files)]

    fake, client = luod(answer)
    fds = client.reclaim("vm1", ["ram0", "ram1"])
    assert list(fds) == ["ram0", "ram1"]
    assert all(isinstance(fd, OwnedFd) for fd in fds.values())
    assert [content(fd) for fd in fds.values()] == [b"zero", b"one"]
    assert fake.requests[0] == codec.Reclaim(0, "vm1", ("ram0", "ram1"))
    for fd in fds.values():
        fd.close()


def test_claim_returns_the_session_fd(luod: Any) -> None:
    _, client = luod(lambda r: [reply(r, (memfd(b"session"),))])
    with client.claim("vm2") as session:
        assert content(session) == b"session"


def test_a_claim_reply_without_its_fd_is_an_error(luod: Any) -> None:
    _, client = luod(lambda r: [reply(r)])
    with pytest.raises(LuodError) as caught:
        client.claim("vm2")
    assert caught.value.code == "fd-count-mismatch"


def test_error_replies_raise_luod_error_with_code_hint_and_errno(luod: Any) -> None:
    error = LuodError("luo-enoent", "PRESERVE_FD: ENOENT", "no LUO handler for vfio fds", 2)
    _, client = luod(lambda r: [refuse(r, error)])
    with memfd(b"") as fd, pytest.raises(LuodError) as caught:
        client.preserve("vm1", {"dev": (fd, "vfio")})
    exc = caught.value
    assert (exc.code, exc.hint, exc.errno) == ("luo-enoent", "no LUO handler for vfio fds", 2)
    assert (exc.seq, exc.cmd, exc.message) == (0, "PRESERVE", "PRESERVE_FD: ENOENT")


def test_events_that_arrive_before_a_reply_are_queued(luod: Any) -> None:
    def answer(request: codec.Request) -> list[codec.Outgoing]:
        return [
            codec.encode(codec.event("FREEZE", id="vm1", deadline_ms=5000)),
            codec.encode(codec.event("START_PRESERVATION", id="vm2"), (memfd(b"s"),)),
            reply(request, vm={"id": "vm1"}),
        ]

    _, client = luod(answer)
    assert client.register("vm1") == {"id": "vm1"}
    with client.wait_event("start_preservation", timeout=0) as started:
        assert (started.name, started.data) == ("START_PRESERVATION", {"id": "vm2"})
        assert content(started.fds[0]) == b"s"
    frozen = client.wait_event(timeout=0)
    assert frozen == Event("FREEZE", {"id": "vm1", "deadline_ms": 5000})
    assert client.wait_event(timeout=0.05) is None


def test_wait_event_blocks_until_luod_pushes_one(luod: Any) -> None:
    fake, client = luod(lambda r: [reply(r)])
    client.subscribe("vm2")
    timer = threading.Timer(0.1, fake.push, [codec.encode(codec.event("RESUME", id="vm2"))])
    timer.start()
    started = time.monotonic()
    event = client.wait_event("RESUME", timeout=10)
    timer.join()
    assert event is not None and event.data == {"id": "vm2"}
    assert time.monotonic() - started >= 0.09


def test_requests_are_numbered_and_optional_fields_sent_only_when_set(luod: Any) -> None:
    fake, client = luod(lambda r: [reply(r, vms=[])])
    client.done("vm1")
    client.done("vm1", force=True)
    client.ready()
    client.ready("vm2", error="no")
    client.list()
    assert fake.requests == [
        codec.Done(0, "vm1", False),
        codec.Done(1, "vm1", True),
        codec.Ready(2, None, None),
        codec.Ready(3, "vm2", "no"),
        codec.ListVms(4, None),
    ]


def test_kexec_hello_status_return_the_reply_fields(luod: Any, tmp_path: Path) -> None:
    def answer(request: codec.Request) -> list[codec.Outgoing]:
        if isinstance(request, codec.Hello):
            return [reply(request, protocol="luod-vmm", version=1, server="luod 0.1.0")]
        return [reply(request, phase="idle", vms=0)]

    fake, client = luod(answer)
    assert client.hello()["protocol"] == "luod-vmm"
    assert client.status() == {"phase": "idle", "vms": 0}
    client.kexec(tmp_path / "vmlinuz")
    assert fake.requests[0] == codec.Hello(0, codec.VERSION)
    assert fake.requests[2] == codec.Kexec(2, str(tmp_path / "vmlinuz"), None, None)


def test_stray_fds_on_a_reply_are_closed(luod: Any) -> None:
    _, client = luod(lambda r: [reply(r, (memfd(b"stray"),))])
    client.drop("vm1")  # the fd leak check of the fixture proves it was closed


def test_truncated_fds_break_the_connection_and_leak_nothing(luod: Any) -> None:
    _, client = luod(lambda r: [reply(r, tuple(memfd(b"") for _ in range(70)), vms=[])])
    with pytest.raises(ConnectionBroken, match="MSG_CTRUNC"):
        client.list()
    with pytest.raises(ConnectionBroken):
        client.status()


def test_luod_closing_the_connection_raises_connection_broken(luod: Any) -> None:
    fake, client = luod(lambda r: [])
    fake.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionBroken, match="closed"):
        client.status()


def test_garbage_from_luod_breaks_the_connection(luod: Any) -> None:
    _, client = luod(lambda r: [codec.Outgoing(b"[1, 2]\n", (memfd(b""),))])
    with pytest.raises(ConnectionBroken, match="bad message"):
        client.status()


def test_a_timed_out_request_is_abandoned_and_its_late_reply_dropped(luod: Any) -> None:
    def answer(request: codec.Request) -> list[codec.Outgoing]:
        if isinstance(request, codec.Claim):
            time.sleep(0.3)
        return [reply(request, (memfd(b"late"),) if isinstance(request, codec.Claim) else ())]

    _, client = luod(answer)
    client._timeout = 0.05
    with pytest.raises(TimeoutError):
        client.claim("vm2")
    client._timeout = 10
    assert client.status() == {}  # the CLAIM reply came first and was dropped, fd closed


def test_a_reply_without_seq_answers_the_oldest_request(luod: Any) -> None:
    error = LuodError("bad-json", "not JSON", "one JSON object per line")
    _, client = luod(lambda r: [codec.encode(codec.error_reply(None, None, error))])
    with pytest.raises(LuodError) as caught:
        client.status()
    assert (caught.value.code, caught.value.seq, caught.value.cmd) == ("bad-json", None, "?")


def test_more_than_64_files_are_refused_before_sending(luod: Any) -> None:
    fake, client = luod(lambda r: [reply(r)])
    with pytest.raises(LuodError) as caught:
        client.preserve("vm1", {f"f{i}": 0 for i in range(65)})
    assert caught.value.code == "too-many-fds" and fake.requests == []


def test_client_connects_to_a_socket_path(tmp_path: Path, no_fd_leak: None) -> None:
    fake = FakeLuod(lambda r: [reply(r, vms=[])], listen=tmp_path / "luod.sock")
    with Client(tmp_path / "luod.sock") as client:
        assert client.list() == []
    fake.join()


# --- the asyncio client ---------------------------------------------------------------------
def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 10))


def test_async_client_preserves_and_reclaims(tmp_path: Path, no_fd_leak: None) -> None:
    def answer(request: codec.Request) -> list[codec.Outgoing]:
        if isinstance(request, codec.Preserve):
            fake.seen["ram0"] = content(request.fds[0])
            return [
                reply(request, files=[{"name": "ram0", "token": 1, "kind": "memfd", "size": 3}])
            ]
        return [
            reply(request, (memfd(b"ram"),), files=[{"name": "ram0", "kind": "memfd", "size": 3}])
        ]

    fake = FakeLuod(answer, listen=tmp_path / "luod.sock")

    async def scenario() -> bytes:
        async with AsyncClient(tmp_path / "luod.sock") as client:
            with memfd(b"ram") as ram0:
                await client.preserve("vm1", {"ram0": ram0})
            fds = await client.reclaim("vm1")
            with fds["ram0"] as fd:
                return content(fd)

    assert run(scenario()) == b"ram"
    fake.join()
    assert fake.seen["ram0"] == b"ram"


def test_async_requests_in_flight_get_their_own_replies(no_fd_leak: None) -> None:
    held: list[codec.Request] = []

    def answer(request: codec.Request) -> list[codec.Outgoing]:
        held.append(request)  # answer both at once, the second first, an event in between
        if len(held) < 2:
            return []
        event = codec.encode(codec.event("FREEZE", id="vm1", deadline_ms=1))
        return [reply(held[1], name="second"), event, reply(held[0], name="first")]

    fake = FakeLuod(answer)

    async def scenario() -> tuple[Any, ...]:
        client = AsyncClient(sock=fake.client_sock)
        async with client:
            first, second = await asyncio.gather(client.status(), client.status())
            event = await client.wait_event("FREEZE", timeout=1)
            nothing = await client.wait_event(timeout=0.05)
            return first, second, event, nothing

    first, second, event, nothing = run(scenario())
    fake.join()
    assert (first, second) == ({"name": "first"}, {"name": "second"})
    assert event is not None and event.name == "FREEZE" and nothing is None


def test_async_errors_raise_luod_error(no_fd_leak: None) -> None:
    fake = FakeLuod(lambda r: [refuse(r, LuodError("not-owner", "VM 'vm1' is uid 0's", "hint"))])

    async def scenario() -> None:
        async with AsyncClient(sock=fake.client_sock) as client:
            await client.register("vm1")

    with pytest.raises(LuodError) as caught:
        run(scenario())
    fake.join()
    assert (caught.value.code, caught.value.hint, caught.value.seq) == ("not-owner", "hint", 0)


def test_async_wait_event_receives_the_session_fd(no_fd_leak: None) -> None:
    fake = FakeLuod(lambda r: [reply(r)])

    async def scenario() -> bytes:
        async with AsyncClient(sock=fake.client_sock) as client:
            await client.subscribe("vm2")
            loop = asyncio.get_running_loop()
            started = codec.encode(codec.event("START_PRESERVATION", id="vm2"), (memfd(b"s"),))
            loop.call_later(0.05, fake.push, started)
            event = await client.wait_event("START_PRESERVATION")
            assert event is not None
            with event:
                await client.ready()
                return content(event.fds[0])

    assert run(scenario()) == b"s"
    fake.join()
    assert fake.requests[-1] == codec.Ready(1, None, None)
