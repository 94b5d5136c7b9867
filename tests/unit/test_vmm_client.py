"""luod.vmm.client against a tiny fake luod in a thread: real AF_UNIX sockets, real fds.

Most tests run twice, once per shell (blocking ``Client`` and asyncio ``AsyncClient``): the two
are thin layers over one protocol core and must behave the same, method for method.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import inspect
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from luod.core import dialect
from luod.core.nic import NicDecl
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import codec, parse
from luod.vmm.client import DEFAULT_SOCKET, AsyncClient, Client, ConnectionBroken, Event
from tests.fds import fd_table

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
    """luod's end of a connection: answers HELLO as luod does (granting the capabilities it
    knows), decodes every other request with the codec and sends what ``answer`` returns
    (events, then the reply), noting what it saw. ``answer`` runs in the thread."""

    def __init__(self, answer: Answer, listen: Path | None = None) -> None:
        self.answer = answer
        self.answers_hello = True
        self.hellos: list[codec.Hello] = []
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
                    self._handle(parse.decode_request(frame))
        finally:
            reader.close()

    def _handle(self, request: codec.Request) -> None:
        if isinstance(request, codec.Hello) and self.answers_hello:
            self.hellos.append(request)
            granted = sorted(dialect.grant(request.capabilities))
            self.push(reply(request, protocol="luod-vmm", version=1, capabilities=granted))
            return
        self.requests.append(request)
        try:
            for out in self.answer(request):
                self.push(out)
        finally:
            for fd in request.fds:
                fd.close()


class Shell:
    """Either client behind one synchronous face: ``call("claim", "vm2")`` runs the method,
    awaiting it on a loop of its own for the asyncio client."""

    def __init__(self, kind: str, client: Client | AsyncClient) -> None:
        self.kind = kind
        self.client = client
        self.runner = asyncio.Runner() if isinstance(client, AsyncClient) else None
        if self.runner is not None:
            self.runner.run(self._awaited(client.connect()))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.client, method)(*args, **kwargs)
        if self.runner is None or not inspect.isawaitable(result):
            return result
        return self.runner.run(self._awaited(result))

    @staticmethod
    async def _awaited(result: Any) -> Any:
        return await asyncio.wait_for(result, 10)

    def close(self) -> None:
        self.client.close()
        if self.runner is not None:
            self.runner.close()


def make_client(kind: str, **options: Any) -> Client | AsyncClient:
    return Client(**options) if kind == "sync" else AsyncClient(**options)


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    before = set(fd_table())
    yield
    assert set(fd_table()) <= before


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def luod(kind: str, no_fd_leak: None) -> Iterator[Callable[..., tuple[FakeLuod, Shell]]]:
    """``luod(answer, **client_options)``: a fake luod and a client of this test's kind."""
    made: list[tuple[FakeLuod, Shell]] = []

    def start(answer: Answer, **options: Any) -> tuple[FakeLuod, Shell]:
        fake = FakeLuod(answer)
        options = {"timeout": 10, **options, "sock": fake.client_sock}
        made.append((fake, Shell(kind, make_client(kind, **options))))
        return made[-1]

    yield start
    for fake, shell in made:
        shell.close()
        fake.join()


# --- the two shells are one client ---------------------------------------------------------
CONTEXT = {"__aenter__": "__enter__", "__aexit__": "__exit__"}


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    """Name -> signature of everything public, the constructor and the context manager."""
    methods = {}
    for name, member in vars(cls).items():
        key = CONTEXT.get(name, name)
        if key.startswith("_") and key not in ("__init__", "__enter__", "__exit__"):
            continue
        target = member.fget if isinstance(member, property) else member
        assert target is not None, f"{name}: a property without a getter"
        methods[key] = inspect.signature(target)
    return methods


def test_both_shells_have_the_same_methods_with_the_same_signatures() -> None:
    sync, asynchronous = public_methods(Client), public_methods(AsyncClient)
    assert set(sync) == set(asynchronous)
    for name, signature in sync.items():
        other = asynchronous[name]
        assert signature.parameters == other.parameters, name
        if name not in ("__enter__", "connect"):  # they return their own class
            assert signature.return_annotation == other.return_annotation, name
    verbs = {cmd.lower() for cmd in codec.COMMAND_OF.values()}
    assert verbs <= set(sync), f"verbs without a method: {verbs - set(sync)}"
    assert {"wait_event", "close", "connect", "granted", "__enter__", "__exit__"} <= set(sync)


def test_async_methods_are_coroutines_where_the_sync_ones_block() -> None:
    for name, member in inspect.getmembers(AsyncClient, inspect.isfunction):
        if name.startswith("_") and name not in ("__aenter__", "__aexit__"):
            continue
        assert inspect.iscoroutinefunction(member) == (name not in ("close", "fileno")), name


def test_default_socket_path() -> None:
    assert DEFAULT_SOCKET == "/run/luod/liveupdate.sock"


# --- every verb, through both shells -------------------------------------------------------
VERBS: list[tuple[str, tuple[Any, ...], dict[str, Any], codec.Request, dict[str, Any], Any]] = [
    ("register", ("vm1",), {}, codec.Register(1, "vm1"), {"vm": {"id": "vm1"}}, {"id": "vm1"}),
    (
        "register",
        ("vm1",),
        {"nics": ["tap0", ("tap1", "br0")]},
        codec.Register(1, "vm1", (NicDecl("tap0"), NicDecl("tap1", "br0"))),
        {"vm": {"id": "vm1"}},
        {"id": "vm1"},
    ),
    (
        "nics",
        ("vm1", [("tap0", None)]),
        {},
        codec.Nics(1, "vm1", (NicDecl("tap0"),)),
        {"vm": {"id": "vm1"}},
        {"id": "vm1"},
    ),
    ("nics", ("vm1", []), {}, codec.Nics(1, "vm1", ()), {"vm": {}}, {}),
    ("list", (), {}, codec.ListVms(1, None), {"vms": []}, []),
    ("list", ("vm1",), {}, codec.ListVms(1, "vm1"), {"vms": [{"id": "vm1"}]}, [{"id": "vm1"}]),
    ("drop", ("vm1",), {}, codec.Drop(1, "vm1"), {}, None),
    ("done", ("vm1",), {}, codec.Done(1, "vm1", False), {}, None),
    ("done", ("vm1",), {"force": True}, codec.Done(1, "vm1", True), {}, None),
    ("subscribe", ("vm2",), {}, codec.Subscribe(1, "vm2"), {"vm": {}}, {"vm": {}}),
    ("ready", (), {}, codec.Ready(1, None, None), {"late": False}, None),
    ("ready", ("vm2",), {"error": "no"}, codec.Ready(1, "vm2", "no"), {}, None),
    ("status", (), {}, codec.Status(1), {"phase": "idle"}, {"phase": "idle"}),
    ("kexec", ("/k",), {}, codec.Kexec(1, "/k", None, None), {}, {}),
    ("kexec", (Path("/k"), Path("/i"), "ro"), {}, codec.Kexec(1, "/k", "/i", "ro"), {}, {}),
    (
        "update",
        (Path("/k"),),
        {"initrd": Path("/i"), "deadlines": {"freezing": 5}, "dry_run": True},
        codec.Update(1, "/k", "/i", None, (("freezing", 5.0),), True, False),
        {"dry_run": True, "checks": []},
        {"dry_run": True, "checks": []},
    ),
    ("update", ("/k",), {"wait": True}, codec.Update(1, "/k", None, None, wait=True), {}, {}),
    ("abort", (), {}, codec.Abort(1, None), {"update": None}, {"update": None}),
    ("abort", ("why",), {}, codec.Abort(1, "why"), {"update": None}, {"update": None}),
    ("watch", (), {}, codec.Watch(1), {"phase": "idle"}, {"phase": "idle"}),
    ("history", (), {}, codec.History(1), {"history": [{"id": "u1"}]}, [{"id": "u1"}]),
]


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "request_", "fields", "result"),
    VERBS,
    ids=[f"{v[0]}-{i}" for i, v in enumerate(VERBS)],
)
def test_every_verb_sends_its_request_and_returns_its_result(
    luod: Any, method: str, args: Any, kwargs: Any, request_: Any, fields: Any, result: Any
) -> None:
    fake, shell = luod(lambda r: [reply(r, **fields)])
    assert shell.call(method, *args, **kwargs) == result
    assert fake.requests == [request_]
    assert [h.seq for h in fake.hellos] == [0]  # negotiated first, pipelined


def test_preserve_sends_the_fds_with_the_frame(luod: Any) -> None:
    def answer(request: codec.Request) -> list[codec.Outgoing]:
        assert isinstance(request, codec.Preserve)
        fake.seen["content"] = [content(fd) for fd in request.fds]
        files = [{"name": s.name, "token": i, "kind": s.kind, "size": 9}
                 for i, s in enumerate(request.files, start=1)]  # fmt: skip
        return [reply(request, files=files)]

    fake, shell = luod(answer)
    with memfd(b"guest ram") as ram0, memfd(b"more ram!") as ram1, memfd(b"a vfio fd") as vfio:
        files = shell.call("preserve", "vm1", {"ram0": ram0, "ram1": ram1.fileno(),
                                               "dev": (vfio, "vfio")})  # fmt: skip
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

    fake, shell = luod(answer)
    fds = shell.call("reclaim", "vm1", ["ram0", "ram1"])
    assert list(fds) == ["ram0", "ram1"]
    assert all(isinstance(fd, OwnedFd) for fd in fds.values())
    assert [content(fd) for fd in fds.values()] == [b"zero", b"one"]
    assert fake.requests == [codec.Reclaim(1, "vm1", ("ram0", "ram1"))]
    assert fds.nics is None  # the VM declared none
    for fd in fds.values():
        fd.close()


def test_reclaim_tells_whether_the_vms_nics_are_ready(luod: Any) -> None:
    nics = {"ready": False, "exact": False, "problems": ["nic tap1: failed (EPERM)"]}

    def answer(request: codec.Request) -> list[codec.Outgoing]:
        files = [{"name": "ram0", "kind": "memfd", "size": 4}]
        return [reply(request, (memfd(b"zero"),), files=files, nics=nics)]

    _, shell = luod(answer)
    fds = shell.call("reclaim", "vm1")
    assert fds.nics == nics and list(fds) == ["ram0"]
    fds["ram0"].close()


def test_claim_returns_the_session_fd(luod: Any) -> None:
    _, shell = luod(lambda r: [reply(r, (memfd(b"session"),))])
    with shell.call("claim", "vm2") as session:
        assert content(session) == b"session"


def test_a_claim_reply_without_its_fd_is_an_error(luod: Any) -> None:
    _, shell = luod(lambda r: [reply(r)])
    with pytest.raises(LuodError) as caught:
        shell.call("claim", "vm2")
    assert caught.value.code == "fd-count-mismatch"


def test_error_replies_raise_luod_error_with_code_hint_and_errno(luod: Any) -> None:
    error = LuodError("luo-enoent", "PRESERVE_FD: ENOENT", "no LUO handler for vfio fds", 2)
    _, shell = luod(lambda r: [refuse(r, error)])
    with memfd(b"") as fd, pytest.raises(LuodError) as caught:
        shell.call("preserve", "vm1", {"dev": (fd, "vfio")})
    exc = caught.value
    assert (exc.code, exc.hint, exc.errno) == ("luo-enoent", "no LUO handler for vfio fds", 2)
    assert (exc.seq, exc.cmd, exc.message) == (1, "PRESERVE", "PRESERVE_FD: ENOENT")


def test_events_that_arrive_before_a_reply_are_queued(luod: Any) -> None:
    def answer(request: codec.Request) -> list[codec.Outgoing]:
        return [
            codec.encode(codec.event("FREEZE", id="vm1", deadline_ms=5000)),
            codec.encode(codec.event("START_PRESERVATION", id="vm2"), (memfd(b"s"),)),
            reply(request, vm={"id": "vm1"}),
        ]

    _, shell = luod(answer)
    assert shell.call("register", "vm1") == {"id": "vm1"}
    with shell.call("wait_event", "start_preservation", timeout=0) as started:
        assert (started.name, started.data) == ("START_PRESERVATION", {"id": "vm2"})
        assert content(started.fds[0]) == b"s"
    frozen = shell.call("wait_event", timeout=0)
    assert frozen == Event("FREEZE", {"id": "vm1", "deadline_ms": 5000})
    assert shell.call("wait_event", timeout=0.05) is None


def test_wait_event_blocks_until_luod_pushes_one(luod: Any) -> None:
    fake, shell = luod(lambda r: [reply(r)])
    shell.call("subscribe", "vm2")
    timer = threading.Timer(0.1, fake.push, [codec.encode(codec.event("RESUME", id="vm2"))])
    timer.start()
    started = time.monotonic()
    event = shell.call("wait_event", "RESUME", timeout=10)
    timer.join()
    assert event is not None and event.data == {"id": "vm2"}
    assert time.monotonic() - started >= 0.09


def test_requests_are_numbered_after_the_hello(luod: Any) -> None:
    fake, shell = luod(lambda r: [reply(r, vms=[])])
    shell.call("done", "vm1")
    shell.call("ready")
    shell.call("list")
    assert [h.seq for h in fake.hellos] == [0]
    assert [r.seq for r in fake.requests] == [1, 2, 3]


# --- HELLO and the capabilities ------------------------------------------------------------
def test_a_client_asks_for_every_capability_of_luods_dialect_by_default(luod: Any) -> None:
    fake, shell = luod(lambda r: [reply(r, phase="idle")])
    assert shell.client.granted is None  # nothing negotiated before the first request
    shell.call("status")
    (hello,) = fake.hellos
    assert (hello.version, set(hello.capabilities)) == (codec.VERSION, set(dialect.ALL))
    assert shell.client.granted == dialect.ALL


def test_a_client_without_capabilities_speaks_luo_agents_dialect(luod: Any) -> None:
    fake, shell = luod(lambda r: [reply(r)], capabilities=None)
    shell.call("subscribe", "vm2")
    shell.call("ready")
    assert fake.hellos == [] and shell.client.granted is None
    assert [r.seq for r in fake.requests] == [0, 1]


def test_an_explicit_hello_negotiates_instead_of_the_automatic_one(luod: Any) -> None:
    fake, shell = luod(lambda r: [reply(r)])
    answer = shell.call("hello", ["freeze", "teleport"])
    assert answer["capabilities"] == ["freeze"] and shell.client.granted == {"freeze"}
    shell.call("drop", "vm1")
    shell.call("hello")  # again, with what the client was built to ask for
    assert [set(h.capabilities) for h in fake.hellos] == [{"freeze", "teleport"}, dialect.ALL]
    assert shell.client.granted == dialect.ALL
    assert [h.seq for h in fake.hellos] == [0, 2]


def test_a_luod_that_grants_nothing_leaves_the_client_in_luo_agents_dialect(
    kind: str, no_fd_leak: None
) -> None:
    fake = FakeLuod(lambda r: [reply(r, version=1)])  # an older luod: no capabilities
    fake.answers_hello = False
    shell = Shell(kind, make_client(kind, sock=fake.client_sock))
    try:
        shell.call("status")
        assert shell.client.granted == frozenset()
    finally:
        shell.close()
    fake.join()
    assert [type(r) for r in fake.requests] == [codec.Hello, codec.Status]


# --- fds, failures, a broken connection ----------------------------------------------------
def test_stray_fds_on_a_reply_are_closed(luod: Any) -> None:
    _, shell = luod(lambda r: [reply(r, (memfd(b"stray"),))])
    shell.call("drop", "vm1")  # the fd leak check of the fixture proves it was closed


def test_truncated_fds_break_the_connection_and_leak_nothing(luod: Any) -> None:
    _, shell = luod(lambda r: [reply(r, tuple(memfd(b"") for _ in range(70)), vms=[])])
    with pytest.raises(ConnectionBroken, match="MSG_CTRUNC"):
        shell.call("list")
    with pytest.raises(ConnectionBroken):
        shell.call("status")


def test_luod_closing_the_connection_raises_connection_broken(luod: Any) -> None:
    fake, shell = luod(lambda r: [], capabilities=None)
    fake.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionBroken, match="closed"):
        shell.call("status")


def test_garbage_from_luod_breaks_the_connection(luod: Any) -> None:
    _, shell = luod(lambda r: [codec.Outgoing(b"[1, 2]\n", (memfd(b""),))])
    with pytest.raises(ConnectionBroken, match="bad message"):
        shell.call("status")


def test_a_timed_out_request_is_abandoned_and_its_late_reply_dropped(luod: Any) -> None:
    def answer(request: codec.Request) -> list[codec.Outgoing]:
        if isinstance(request, codec.Claim):
            time.sleep(0.3)
            return [reply(request, (memfd(b"late"),))]
        return [reply(request, phase="idle")]

    _, shell = luod(answer, timeout=0.1)
    shell.call("status")  # the HELLO is answered at once
    with pytest.raises(TimeoutError):
        shell.call("claim", "vm2")
    time.sleep(0.3)
    assert shell.call("status") == {"phase": "idle"}  # the CLAIM reply was dropped, fd closed


def test_a_reply_without_seq_answers_the_oldest_request(luod: Any) -> None:
    error = LuodError("bad-json", "not JSON", "one JSON object per line")
    _, shell = luod(lambda r: [codec.encode(codec.error_reply(None, None, error))])
    shell.call("hello")
    with pytest.raises(LuodError) as caught:
        shell.call("status")
    assert (caught.value.code, caught.value.seq, caught.value.cmd) == ("bad-json", None, "?")


def test_more_than_64_files_are_refused_before_sending(luod: Any) -> None:
    fake, shell = luod(lambda r: [reply(r)])
    with pytest.raises(LuodError) as caught:
        shell.call("preserve", "vm1", {f"f{i}": 0 for i in range(65)})
    assert caught.value.code == "too-many-fds" and fake.requests == fake.hellos == []


def test_a_closed_client_refuses_further_requests(luod: Any) -> None:
    _, shell = luod(lambda r: [reply(r)])
    shell.client.close()
    with pytest.raises(ConnectionBroken, match="closed"):
        shell.call("status")


def test_client_connects_to_a_socket_path(kind: str, tmp_path: Path, no_fd_leak: None) -> None:
    fake = FakeLuod(lambda r: [reply(r, vms=[])], listen=tmp_path / "luod.sock")
    shell = Shell(kind, make_client(kind, path=tmp_path / "luod.sock"))
    try:
        assert shell.call("list") == []
        assert shell.call("fileno") >= 0
    finally:
        shell.close()
    fake.join()


# --- what only the asyncio shell can do: several tasks on one connection ---------------------
def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 10))


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
        async with AsyncClient(sock=fake.client_sock) as client:
            first, second = await asyncio.gather(client.status(), client.status())
            event = await client.wait_event("FREEZE", timeout=1)
            nothing = await client.wait_event(timeout=0.05)
            return first, second, event, nothing

    first, second, event, nothing = run(scenario())
    fake.join()
    assert (first, second) == ({"name": "first"}, {"name": "second"})
    assert event is not None and event.name == "FREEZE" and nothing is None
    assert len(fake.hellos) == 1  # one negotiation for both tasks


def test_async_client_before_connect_is_not_connected() -> None:
    client = AsyncClient("/nonexistent/luod.sock")
    with pytest.raises(ConnectionBroken, match="not connected"):
        run(client.status())
    client.close()


def test_the_context_managers_close_the_client(kind: str, no_fd_leak: None) -> None:
    fake = FakeLuod(lambda r: [reply(r, vms=[])])
    client = make_client(kind, sock=fake.client_sock)

    async def in_async_with() -> Any:
        assert isinstance(client, AsyncClient)
        async with client as entered:
            assert entered is client
            return await client.list()

    if isinstance(client, Client):
        with client as entered:
            assert entered is client.connect() is client
            assert client.list() == []
    else:
        assert run(in_async_with()) == []
    with pytest.raises(ConnectionBroken, match="closed"):
        Shell(kind, client).call("status") if kind == "sync" else run(client.status())
    fake.join()


def test_a_socket_path_nobody_listens_on_raises_at_connect(kind: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Shell(kind, make_client(kind, path=tmp_path / "absent.sock"))


def test_a_send_into_a_closed_connection_breaks_it(kind: str, no_fd_leak: None) -> None:
    mine, theirs = socket.socketpair()
    theirs.close()
    shell = Shell(kind, make_client(kind, sock=mine))
    try:
        with pytest.raises(ConnectionBroken, match="sending to luod"):
            shell.call("status")
        with pytest.raises(ConnectionBroken, match="sending to luod"):
            shell.call("status")
    finally:
        shell.close()


class SlowLuod:
    """A peer that reads nothing until told to, then answers every request by its seq."""

    def __init__(self) -> None:
        self.client_sock, self.sock = socket.socketpair()
        for sock, option in ((self.client_sock, socket.SO_SNDBUF), (self.sock, socket.SO_RCVBUF)):
            sock.setsockopt(socket.SOL_SOCKET, option, 4096)
        self.go = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.go.wait(10)
        reader = codec.FrameReader()
        with self.sock, contextlib.suppress(OSError):  # the client may be gone by then
            while data := self.sock.recv(65536):
                for frame in reader.feed(data, []):
                    seq = json.loads(frame.line)["seq"]
                    self.sock.sendall(codec.encode(codec.ok_reply("KEXEC", seq, {})).line)


def test_async_writes_wait_for_room_in_the_socket(no_fd_leak: None) -> None:
    peer = SlowLuod()

    async def scenario() -> list[Any]:
        async with AsyncClient(sock=peer.client_sock) as client:
            calls = [client.kexec("/k", cmdline="x" * 30_000) for _ in range(6)]
            asyncio.get_running_loop().call_later(0.2, peer.go.set)
            return list(await asyncio.gather(*calls))

    assert run(scenario()) == [{}] * 6
    peer.thread.join(10)


def test_a_request_cancelled_half_way_through_its_frame_breaks_the_connection(
    no_fd_leak: None,
) -> None:
    peer = SlowLuod()

    async def scenario() -> None:
        async with AsyncClient(sock=peer.client_sock) as client:
            sending = asyncio.create_task(client.kexec("/k", cmdline="x" * 60_000))
            await asyncio.sleep(0.2)  # blocked: the peer reads nothing
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            with pytest.raises(ConnectionBroken, match="cut off half-way"):
                await client.status()

    run(scenario())
    peer.go.set()
    peer.thread.join(10)
