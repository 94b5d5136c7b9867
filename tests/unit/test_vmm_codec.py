"""The VMM wire codec: framing, fd attribution, request validation, limits (api/vmm-protocol.md).

Round trips run every request type through random chunkings shaped like Linux delivers a unix
stream: a read that returns fds starts at or before the first byte of the frame they were sent
with and ends inside that frame (it may begin with bytes of earlier frames).
"""

from __future__ import annotations

import array
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luod.core import model
from luod.core.model import FileSpec
from luod.core.nic import NicDecl
from luod.core.orchestrator import DEADLINE_PHASES
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import codec, fields, parse
from luod.vmm.codec import Frame, FrameReader

pytestmark = pytest.mark.unit
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FdPool:
    """Real fds (duplicates of /dev/null) for one example; whatever is left open is closed."""

    def __init__(self) -> None:
        self.made: list[OwnedFd] = []

    def take(self, count: int) -> list[OwnedFd]:
        fds = [OwnedFd(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)) for _ in range(count)]
        self.made += fds
        return fds

    def close(self) -> None:
        for fd in self.made:
            fd.close()


@contextmanager
def fd_pool() -> Iterator[FdPool]:
    pool = FdPool()
    try:
        yield pool
    finally:
        pool.close()


# --- valid requests of every type -----------------------------------------------------------
Make = Callable[[int | None, tuple[OwnedFd, ...]], codec.Request]


@dataclass(frozen=True)
class Sample:
    message: dict[str, Any]
    nfds: int
    make: Make  # the request decode_request must return, given seq and the frame's fds

    def expected(self, fds: tuple[OwnedFd, ...]) -> codec.Request:
        return self.make(self.message.get("seq"), fds)


VM_IDS = st.from_regex(model.VM_ID, fullmatch=True)
NAMES = st.from_regex(model.FILE_NAME, fullmatch=True)
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=40)
KINDS = st.sampled_from(model.FILE_KINDS)


def _entry(name: str, kind: str, form: int) -> Any:
    if form == 0 and kind == "memfd":
        return name
    return {"name": name} if form == 1 and kind == "memfd" else {"name": name, "kind": kind}


@st.composite
def _preserve(draw: st.DrawFn) -> tuple[dict[str, Any], int, Make]:
    vm = draw(VM_IDS)
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    kinds = [draw(KINDS) for _ in names]
    files = [_entry(n, k, draw(st.integers(0, 2))) for n, k in zip(names, kinds, strict=True)]
    specs = tuple(FileSpec(n, k) for n, k in zip(names, kinds, strict=True))
    return {"id": vm, "files": files}, len(files), lambda s, f: codec.Preserve(s, vm, specs, f)


IFNAMES = st.from_regex(r"[a-z][a-z0-9_.-]{0,14}", fullmatch=True)


@st.composite
def _nics(draw: st.DrawFn) -> tuple[list[dict[str, Any]], tuple[NicDecl, ...]]:
    """A NIC declaration: names, with a bridge or without (absent or null)."""
    names = draw(st.lists(IFNAMES, max_size=4, unique=True))
    bridges = [draw(st.one_of(st.none(), IFNAMES)) for _ in names]
    forms = [draw(st.booleans()) for _ in names]
    entries = [
        {"name": n, **({"bridge": b} if b is not None or form else {})}
        for n, b, form in zip(names, bridges, forms, strict=True)
    ]
    return entries, tuple(NicDecl(n, b) for n, b in zip(names, bridges, strict=True))


@st.composite
def _register(draw: st.DrawFn) -> tuple[dict[str, Any], int, Make]:
    vm = draw(VM_IDS)
    if draw(st.booleans()):
        return {"id": vm}, 0, lambda s, _: codec.Register(s, vm)
    entries, decls = draw(_nics())
    return {"id": vm, "nics": entries}, 0, lambda s, _: codec.Register(s, vm, decls)


@st.composite
def _declare(draw: st.DrawFn) -> tuple[dict[str, Any], int, Make]:
    vm = draw(VM_IDS)
    entries, decls = draw(_nics())
    return {"id": vm, "nics": entries}, 0, lambda s, _: codec.Nics(s, vm, decls)


def _hello(message: dict[str, Any]) -> tuple[dict[str, Any], int, Make]:
    return (
        message,
        0,
        lambda s, _: codec.Hello(
            s, message.get("version", codec.VERSION), tuple(message.get("capabilities", ()))
        ),
    )


def _optional(key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.just({}), values.map(lambda v: {key: v}))


def _simple(cls: Any, **strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Fields drawn as given; the request is ``cls(seq, *values)`` (absent keys give None)."""
    keys = list(strategies)

    def build(fields: dict[str, Any]) -> tuple[dict[str, Any], int, Make]:
        return fields, 0, lambda s, _: cls(s, *(fields.get(k) for k in keys))

    return st.fixed_dictionaries({}, optional=strategies).map(build)


FIELDS: dict[str, st.SearchStrategy[tuple[dict[str, Any], int, Make]]] = {
    "HELLO": st.fixed_dictionaries(
        {},
        optional={
            "version": st.integers(-5, 2**40),
            "capabilities": st.lists(st.from_regex(parse.CAPABILITY, fullmatch=True), max_size=6),
        },
    ).map(_hello),
    "REGISTER": _register(),
    "NICS": _declare(),
    "PRESERVE": _preserve(),
    "LIST": _simple(codec.ListVms, id=VM_IDS),
    "DROP": VM_IDS.map(lambda i: ({"id": i}, 0, lambda s, _: codec.Drop(s, i))),
    "RECLAIM": st.tuples(VM_IDS, _optional("files", st.lists(NAMES, max_size=5))).map(
        lambda t: (
            {"id": t[0], **t[1]},
            0,
            lambda s, _: codec.Reclaim(s, t[0], _tuple_or_none(t[1].get("files"))),
        )
    ),
    "DONE": st.tuples(VM_IDS, _optional("force", st.booleans())).map(
        lambda t: ({"id": t[0], **t[1]}, 0, lambda s, _: codec.Done(s, t[0], t[1].get("force", 0)))
    ),
    "SUBSCRIBE": VM_IDS.map(lambda i: ({"id": i}, 0, lambda s, _: codec.Subscribe(s, i))),
    "READY": _simple(codec.Ready, id=VM_IDS, error=TEXT),
    "CLAIM": VM_IDS.map(lambda i: ({"id": i}, 0, lambda s, _: codec.Claim(s, i))),
    "STATUS": st.just(({}, 0, lambda s, _: codec.Status(s))),
    "KEXEC": st.tuples(
        TEXT.filter(bool), st.fixed_dictionaries({}, optional={"initrd": TEXT, "cmdline": TEXT})
    ).map(
        lambda t: (
            {"kernel": t[0], **t[1]},
            0,
            lambda s, _: codec.Kexec(s, t[0], t[1].get("initrd"), t[1].get("cmdline")),
        )
    ),
    "UPDATE": st.tuples(
        TEXT.filter(bool),
        st.fixed_dictionaries({}, optional={"initrd": TEXT, "cmdline": TEXT}),
        st.dictionaries(st.sampled_from(DEADLINE_PHASES), st.floats(0.001, 6e5), max_size=3),
        st.booleans(),
        st.booleans(),
    ).map(
        lambda t: (
            {"kernel": t[0], **t[1], "deadlines": t[2], "dry_run": t[3], "wait": t[4]},
            0,
            lambda s, _: codec.Update(
                s,
                t[0],
                t[1].get("initrd"),
                t[1].get("cmdline"),
                tuple((k, float(v)) for k, v in t[2].items()),
                t[3],
                t[4],
            ),
        )
    ),
    "ABORT": _simple(codec.Abort, reason=TEXT),
    "WATCH": st.just(({}, 0, lambda s, _: codec.Watch(s))),
    "HISTORY": st.just(({}, 0, lambda s, _: codec.History(s))),
}
EXTRA = st.dictionaries(st.sampled_from(["x-future", "trace", "vcpus"]), st.integers(), max_size=2)


def _tuple_or_none(names: list[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


@st.composite
def requests(draw: st.DrawFn, cmd: str | None = None) -> Sample:
    """A valid request of ``cmd`` (any command when None), with unknown extra fields."""
    cmd = cmd or draw(st.sampled_from(sorted(FIELDS)))
    fields, nfds, make = draw(FIELDS[cmd])
    spelled = draw(st.sampled_from([cmd, cmd.lower(), cmd.capitalize()]))
    message = {**draw(EXTRA), "cmd": spelled, **fields}
    if draw(st.booleans()):
        message["seq"] = draw(st.integers(0, 2**63))
    return Sample(message, nfds, make)


def line_of(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def test_every_command_has_a_strategy() -> None:
    assert set(FIELDS) == set(codec.COMMAND_OF.values())


# --- round trips ----------------------------------------------------------------------------
def kernel_like_chunks(
    data: st.DataObject, lines: list[bytes], fds: list[list[OwnedFd]]
) -> list[tuple[bytes, list[OwnedFd]]]:
    """Random reads of the stream; a frame's fds come with the read carrying its first byte,
    which ends at the latest with that frame (as the kernel ends a read after the fds' skb)."""
    stream = b"".join(lines)
    starts = [sum(map(len, lines[:i])) for i in range(len(lines))]
    ends = [start + len(line) for start, line in zip(starts, lines, strict=True)]
    cuts = set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12)))
    cuts |= {end for end, mine in zip(ends, fds, strict=True) if mine}
    bounds = sorted(cuts | {0, len(stream)})
    return [
        (
            stream[a:b],
            [fd for start, mine in zip(starts, fds, strict=True) if a <= start < b for fd in mine],
        )
        for a, b in pairwise(bounds)
    ]


@FAST
@given(samples=st.lists(requests(), min_size=1, max_size=6), data=st.data())
def test_requests_round_trip_through_any_chunking(samples: list[Sample], data: Any) -> None:
    with fd_pool() as pool:
        lines = [line_of(s.message) for s in samples]
        fds = [pool.take(s.nfds) for s in samples]
        reader = FrameReader()
        frames = [f for chunk in kernel_like_chunks(data, lines, fds) for f in reader.feed(*chunk)]
        assert reader.pending_fds == 0
        assert [f.line + b"\n" for f in frames] == lines
        for sample, frame, sent in zip(samples, frames, fds, strict=True):
            assert frame.fds == tuple(sent)
            assert parse.decode_request(frame) == sample.expected(tuple(sent))
            assert not any(fd.closed for fd in sent)  # decoding never closes


@pytest.mark.parametrize("cmd", sorted(codec.COMMAND_OF.values()))
@FAST
@given(data=st.data())
def test_each_request_type_decodes_to_its_class(cmd: str, data: Any) -> None:
    sample = data.draw(requests(cmd))
    with fd_pool() as pool:
        fds = tuple(pool.take(sample.nfds))
        request = parse.decode_request(Frame(line_of(sample.message)[:-1], fds))
        assert request.cmd == cmd and request.seq == sample.message.get("seq")
        assert request == sample.expected(fds) and request.fds == fds


def _recv(sock: socket.socket, size: int) -> tuple[bytes, list[OwnedFd]]:
    data, ancillary, flags, _ = sock.recvmsg(size, socket.CMSG_SPACE(64 * 4))
    assert not flags & socket.MSG_CTRUNC
    fds = [OwnedFd(n) for _, _, raw in ancillary for n in array.array("i", raw)]
    return data, fds


def _sendmsg(sock: socket.socket, line: bytes, fds: list[OwnedFd]) -> None:
    rights = array.array("i", [fd.fileno() for fd in fds]).tobytes()
    assert sock.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)] if fds else [])
    # sendmsg of a unix stream socket in blocking mode writes the whole frame


def test_the_kernel_glues_earlier_frames_in_front_of_an_fd_carrying_frame() -> None:
    """Why fds go to the frame of the read's *last* byte, not its first (api §4)."""
    a, b = socket.socketpair()
    with a, b, fd_pool() as pool:
        _sendmsg(a, b"aaaa\n", [])
        _sendmsg(a, b"bbbb\n", pool.take(1))
        data, fds = _recv(b, 4096)
        assert data == b"aaaa\nbbbb\n" and len(fds) == 1
        frames = FrameReader().feed(data, fds)
        assert [len(f.fds) for f in frames] == [0, 1]
        for fd in fds:
            fd.close()


@pytest.mark.parametrize("read_size", [1, 7, 4096, 65536, 200_000])
def test_fds_reach_their_frames_over_a_real_socket(read_size: int) -> None:
    sizes = [10, 60_000, 20, 5, 40_000, 3]  # big frames span several skbs
    fd_counts = [0, 2, 1, 0, 3, 0]
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    with a, b, fd_pool() as pool:
        sent = [pool.take(n) for n in fd_counts]
        lines = [bytes([65 + i]) * size + b"\n" for i, size in enumerate(sizes)]
        for line, fds in zip(lines, sent, strict=True):
            _sendmsg(a, line, fds)
        a.shutdown(socket.SHUT_WR)
        reader, frames = FrameReader(max_line=1 << 20), []
        while chunk := _recv(b, read_size):
            if not chunk[0]:
                break
            pool.made += chunk[1]
            frames += reader.feed(*chunk)
        assert [f.line + b"\n" for f in frames] == lines
        assert [len(f.fds) for f in frames] == fd_counts
        for frame, fds in zip(frames, sent, strict=True):  # same open files, in order
            inodes = [os.fstat(fd.fileno()).st_ino for fd in frame.fds]
            assert inodes == [os.fstat(fd.fileno()).st_ino for fd in fds]


# --- hostile input --------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["id", "files", "version", "force", "error", "kernel", "initrd", "seq"])


@FAST
@given(
    cmd=st.sampled_from(sorted(FIELDS)) | TEXT | JSON,
    fields=st.dictionaries(KEYS | TEXT, JSON, max_size=5),
    nfds=st.integers(0, 3),
)
def test_decode_request_raises_only_luod_errors(
    cmd: Any, fields: dict[str, Any], nfds: int
) -> None:
    with fd_pool() as pool:
        fds = tuple(pool.take(nfds))
        try:
            parse.decode_request(Frame(json.dumps({**fields, "cmd": cmd}).encode(), fds))
        except LuodError as exc:
            assert exc.code in CODES
        assert not any(fd.closed for fd in fds)


CODES = {
    "bad-json", "unknown-command", "bad-request", "bad-id", "bad-name",
    "unexpected-fds", "fd-count-mismatch", "too-many-fds",
}  # fmt: skip


@FAST
@given(chunks=st.lists(st.tuples(st.binary(max_size=120), st.integers(0, 3)), max_size=8))
def test_arbitrary_bytes_only_raise_luod_errors_and_every_fd_is_accounted_for(
    chunks: list[tuple[bytes, int]],
) -> None:
    with fd_pool() as pool:
        reader = FrameReader(max_line=100)
        handed: list[OwnedFd] = []
        returned: list[OwnedFd] = []
        try:
            for data, count in chunks:
                fds = pool.take(count)
                handed += fds
                for frame in reader.feed(data, fds):
                    returned += frame.fds
                    try:
                        parse.decode_request(frame)
                    except LuodError as exc:
                        assert exc.code in CODES
        except LuodError as exc:
            assert exc.code == "line-too-long"
        finally:
            reader.close()
        for fd in handed:  # in a returned frame and open, or closed by the reader
            assert fd.closed != any(fd is mine for mine in returned)


def test_deeply_nested_json_is_bad_json_not_a_crash() -> None:
    with pytest.raises(LuodError) as caught:
        parse.decode_request(Frame(b"[" * 60_000))
    assert caught.value.code == "bad-json"


def test_errors_carry_the_upper_case_command_and_the_seq() -> None:
    with pytest.raises(LuodError) as caught:
        parse.decode_request(Frame(b'{"cmd": "register", "seq": 5, "id": "-x"}'))
    assert (caught.value.code, caught.value.cmd, caught.value.seq) == ("bad-id", "REGISTER", 5)


# --- limits ---------------------------------------------------------------------------------
def test_a_line_of_max_line_bytes_is_accepted() -> None:
    frames = FrameReader().feed(b"x" * codec.MAX_LINE + b"\n", [])
    assert len(frames[0].line) == codec.MAX_LINE


@pytest.mark.parametrize("newline", [b"\n", b""])
def test_a_65537_byte_line_is_line_too_long(newline: bytes) -> None:
    with pytest.raises(LuodError) as caught:
        FrameReader().feed(b"x" * (codec.MAX_LINE + 1) + newline, [])
    assert caught.value.code == "line-too-long"


def test_line_too_long_closes_the_fds_of_frames_it_swallowed() -> None:
    with fd_pool() as pool:
        fds = pool.take(2)
        reader = FrameReader()
        with pytest.raises(LuodError):
            reader.feed(b'{"cmd":"LIST"}\n' + b"x" * (codec.MAX_LINE + 1), fds)
        reader.close()
        assert all(fd.closed for fd in fds)


def test_65_fds_are_too_many() -> None:
    files = [f"f{i}" for i in range(65)]
    with fd_pool() as pool:
        frame = Frame(
            line_of({"cmd": "PRESERVE", "id": "vm1", "files": files}), tuple(pool.take(65))
        )
        with pytest.raises(LuodError) as caught:
            parse.decode_request(frame)
        assert caught.value.code == "too-many-fds"


def test_64_fds_are_fine() -> None:
    files = [f"f{i}" for i in range(64)]
    with fd_pool() as pool:
        frame = Frame(
            line_of({"cmd": "PRESERVE", "id": "vm1", "files": files})[:-1], tuple(pool.take(64))
        )
        assert len(parse.decode_request(frame).fds) == 64


@pytest.mark.parametrize(("names", "nfds"), [(["a", "b"], 1), (["a"], 2), (["a"], 0)])
def test_fd_count_must_match_the_files(names: list[str], nfds: int) -> None:
    with fd_pool() as pool:
        frame = Frame(
            line_of({"cmd": "PRESERVE", "id": "vm1", "files": names}), tuple(pool.take(nfds))
        )
        with pytest.raises(LuodError) as caught:
            parse.decode_request(frame)
        assert caught.value.code == "fd-count-mismatch"


def test_fds_on_a_request_that_takes_none_are_unexpected() -> None:
    with fd_pool() as pool:
        with pytest.raises(LuodError) as caught:
            parse.decode_request(Frame(b'{"cmd":"LIST"}', tuple(pool.take(1))))
        assert caught.value.code == "unexpected-fds"


# --- replies and events ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        codec.ok_reply("STATUS", 3, {"phase": "idle", "vms": 0}),
        codec.ok_reply("DROP", None),
        codec.error_reply(None, None, LuodError("bad-json", "not JSON", "one object per line")),
        codec.error_reply("PRESERVE", 9, LuodError("luo-enoent", "no handler", "memfd", 2)),
        codec.event("RECLAIM_READY", ids=["vm1"]),
    ],
)
def test_server_messages_round_trip(message: dict[str, Any]) -> None:
    out = codec.encode(message)
    assert out.line.endswith(b"\n") and out.line.count(b"\n") == 1
    (frame,) = FrameReader().feed(out.line, [])
    assert codec.decode_server_message(frame) == message


def test_an_outgoing_frame_over_max_line_is_refused() -> None:
    with pytest.raises(codec.ReplyTooLarge) as refused:
        codec.encode({"event": "X", "pad": "x" * codec.MAX_LINE})
    assert refused.value.code == "reply-too-large"


def test_an_error_reply_always_fits_one_frame() -> None:
    """Finding 1: however long the texts of an error, its reply fits (cut, not refused)."""
    huge = LuodError("bad-id", "é" * codec.MAX_LINE, "\u2028" * codec.MAX_LINE)
    out = codec.encode(codec.error_reply("X" * codec.MAX_LINE, 1, huge))
    message = json.loads(out.line)
    assert len(out.line) < 16 * 1024
    assert len(message["error"]["message"]) == codec.MAX_ERROR_TEXT
    assert message["reply"] == "X" * fields.SHOWN_CHARS


@pytest.mark.parametrize("value", ["é" * 30000, ["x" * 100] * 300, {"k": "v" * 70000}])
def test_an_echoed_value_is_cut(value: Any) -> None:
    assert len(fields.shown(value)) == fields.SHOWN_CHARS


def test_limits_of_ids_names_and_files_per_request() -> None:
    """docs/limits.md: each at the limit and one past it."""

    def code(message: dict[str, Any], nfds: int = 0) -> str | None:
        fds = tuple(OwnedFd(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)) for _ in range(nfds))
        try:
            parse.decode_request(codec.Frame(json.dumps(message).encode(), fds))
        except LuodError as exc:
            return exc.code
        finally:
            for fd in fds:
                fd.close()
        return None

    assert code({"cmd": "REGISTER", "id": "v" * 58}) is None
    assert code({"cmd": "REGISTER", "id": "v" * 59}) == "bad-id"
    assert code({"cmd": "PRESERVE", "id": "v", "files": ["f" * 64]}, 1) is None
    assert code({"cmd": "PRESERVE", "id": "v", "files": ["f" * 65]}, 1) == "bad-name"
    files = [f"f{n}" for n in range(codec.MAX_FDS + 1)]
    assert code({"cmd": "PRESERVE", "id": "v", "files": files[:-1]}, codec.MAX_FDS) is None
    assert code({"cmd": "PRESERVE", "id": "v", "files": files}, codec.MAX_FDS) == "bad-request"


@pytest.mark.parametrize(
    ("nics", "code", "said"),
    [
        ("tap0", "bad-request", "nics"),
        ([{"name": "tap0"}] * 2, "bad-request", "twice"),
        ([{"name": f"tap{i}"} for i in range(parse.MAX_NICS + 1)], "bad-request", "nics"),
        ([{"name": "tap/0"}], "bad-nic-name", "nics[0].name"),
        ([{"name": "tap0", "bridge": "a" * 16}], "bad-nic-name", "nics[0].bridge"),
        ([{"name": "tap0", "queues": 4}], "bad-nic-record", "unknown field"),
    ],
)
def test_bad_nic_declarations_are_refused_naming_the_field(nics: Any, code: str, said: str) -> None:
    for cmd in ("REGISTER", "NICS"):
        line = json.dumps({"cmd": cmd, "seq": 3, "id": "vm1", "nics": nics}).encode()
        with pytest.raises(LuodError) as caught:
            parse.decode_request(Frame(line))
        assert (caught.value.code, caught.value.cmd, caught.value.seq) == (code, cmd, 3)
        assert said in caught.value.message and caught.value.hint


def test_nics_needs_its_list() -> None:
    with pytest.raises(LuodError) as caught:
        parse.decode_request(Frame(b'{"cmd":"NICS","id":"vm1"}'))
    assert caught.value.code == "bad-request"


# --- the request values (luod.values: NamedTuples compared within their kind) ----------------
def test_requests_of_different_kinds_never_compare_equal() -> None:
    """As frozen dataclasses they never did; as bare NamedTuples ``Status(seq=1)`` would equal
    ``Watch(seq=1)`` (and the tuple ``(1,)``), letting a test of the wrong decoded kind pass."""
    assert codec.Status(1) == codec.Status(1)
    assert codec.Status(1) != codec.Watch(1)
    assert codec.Status(1) != (1,)
    assert codec.Drop(1, "vm") != codec.Claim(1, "vm")
    assert codec.Drop(1, "vm") != codec.Drop(2, "vm")
    assert len({codec.Drop(1, "vm"), codec.Drop(1, "vm"), codec.Claim(1, "vm")}) == 2


def test_every_request_kind_is_immutable_and_names_its_command() -> None:
    made = {
        kind: kind(*([None] * len(kind._fields)))  # type: ignore[attr-defined]
        for kind in codec.COMMAND_OF
    }
    for kind, request in made.items():
        assert request.cmd == codec.COMMAND_OF[kind]
        assert request.fds == (None if kind is codec.Preserve else ())  # its own, attached
        with pytest.raises(AttributeError):
            request.seq = 7  # type: ignore[misc]
        assert not hasattr(request, "__dict__")  # a plain tuple in memory


def test_a_preserve_carries_its_fds_but_does_not_show_them() -> None:
    with open(os.devnull, "rb") as null:
        attached = (OwnedFd(os.dup(null.fileno())),)
    try:
        request = codec.Preserve(3, "vm", (FileSpec("ram"),), attached)
        assert request.fds == attached
        assert repr(request) == f"Preserve(seq=3, id='vm', files=({FileSpec('ram')!r},))"
    finally:
        attached[0].close()
