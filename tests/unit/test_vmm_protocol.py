"""The client's sans-I/O protocol core (luod.vmm.protocol) and its verbs (luod.vmm.verbs): no
sockets, only frames in and out. The shells over it are tested in test_vmm_client.py."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from luod.core import dialect
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import verbs
from luod.vmm.protocol import ClientProtocol, ConnectionBroken, Event, OutFrame, Reply

pytestmark = pytest.mark.unit


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def fds(count: int) -> list[OwnedFd]:
    return [OwnedFd(os.memfd_create("t", os.MFD_CLOEXEC)) for _ in range(count)]


def written(protocol: ClientProtocol) -> list[tuple[dict[str, Any], tuple[int, ...]]]:
    frames = []
    while (frame := protocol.next_frame()) is not None:
        frames.append((json.loads(frame.line), frame.fds))
    return frames


@pytest.fixture
def protocol() -> Iterator[ClientProtocol]:
    core = ClientProtocol()
    yield core
    core.close()


def test_the_first_request_is_preceded_by_a_hello_asking_for_luods_dialect(
    protocol: ClientProtocol,
) -> None:
    seq = protocol.send("REGISTER", {"id": "vm1"})
    (hello, _), (register, _) = written(protocol)
    assert hello == {"cmd": "HELLO", "seq": 0, "version": 1, "capabilities": sorted(dialect.ALL)}
    assert (seq, register) == (1, {"cmd": "REGISTER", "seq": 1, "id": "vm1"})
    protocol.send("LIST", {})
    assert [m["cmd"] for m, _ in written(protocol)] == ["LIST"]  # one HELLO per connection


def test_the_hello_reply_is_consumed_and_sets_what_was_granted(protocol: ClientProtocol) -> None:
    protocol.send("STATUS", {})
    assert protocol.granted is None
    protocol.receive_data(
        line({"reply": "HELLO", "ok": True, "seq": 0, "capabilities": ["freeze"]}), []
    )
    assert protocol.granted == {"freeze"}
    assert protocol.next_reply(0) is None  # nobody asked for it


def test_a_refused_hello_grants_nothing(protocol: ClientProtocol) -> None:
    protocol.send("STATUS", {})
    error = {"code": "bad-request", "message": "m", "hint": "h"}
    protocol.receive_data(line({"reply": "HELLO", "ok": False, "seq": 0, "error": error}), [])
    assert protocol.granted == frozenset()


def test_without_capabilities_nothing_is_negotiated() -> None:
    protocol = ClientProtocol(capabilities=None)
    protocol.send("SUBSCRIBE", {"id": "vm2"})
    assert [m for m, _ in written(protocol)] == [{"cmd": "SUBSCRIBE", "seq": 0, "id": "vm2"}]
    protocol.send("HELLO", {"version": 1})  # asked explicitly: an empty list
    assert written(protocol)[0][0]["capabilities"] == []


def test_fields_that_are_none_are_left_out_and_the_callers_fds_ride_along(
    protocol: ClientProtocol,
) -> None:
    protocol.send("PRESERVE", {"id": "vm1", "files": ["ram0"], "force": None}, (7,))
    frames = [protocol.next_frame(), protocol.next_frame(), protocol.next_frame()]
    assert isinstance(frames[1], OutFrame) and frames[2] is None
    assert frames[1].fds == (7,) and b"force" not in frames[1].line
    assert frames[0] is not None and frames[0].fds == ()


def test_replies_are_matched_by_seq_in_any_order(protocol: ClientProtocol) -> None:
    first, second = protocol.send("STATUS", {}), protocol.send("LIST", {})
    data = line({"reply": "LIST", "ok": True, "seq": second, "vms": []})
    data += line({"reply": "STATUS", "ok": True, "seq": first, "phase": "idle"})
    protocol.receive_data(data, [])
    assert protocol.next_reply(first) == Reply({"reply": "STATUS", "ok": True, "seq": 1,
                                               "phase": "idle"})  # fmt: skip
    assert protocol.next_reply(second) is not None
    assert protocol.next_reply(second) is None  # taken once


def test_fds_belong_to_the_frame_of_the_reads_last_byte(protocol: ClientProtocol) -> None:
    seq = protocol.send("CLAIM", {"id": "vm2"})
    event = line({"event": "RESUME", "id": "vm1"})
    claim = line({"reply": "CLAIM", "ok": True, "seq": seq})
    session = fds(1)
    protocol.receive_data(event + claim, session)
    got = protocol.next_reply(seq)
    assert got is not None and got.fds == tuple(session)
    assert protocol.next_event() == Event("RESUME", {"id": "vm1"})
    verbs.one_fd(got).close()


def test_events_queue_in_order_and_can_be_taken_by_name(protocol: ClientProtocol) -> None:
    protocol.receive_data(line({"event": "phase", "to": "freezing"}), [])
    protocol.receive_data(line({"event": "FREEZE", "id": "vm1"}), [])
    assert protocol.next_event("freeze") == Event("FREEZE", {"id": "vm1"})
    assert protocol.next_event() == Event("PHASE", {"to": "freezing"})
    assert protocol.next_event() is None


def test_an_abandoned_request_has_its_reply_and_fds_dropped(protocol: ClientProtocol) -> None:
    seq = protocol.send("CLAIM", {"id": "vm2"})
    protocol.abandon(seq)
    late = fds(1)
    protocol.receive_data(line({"reply": "CLAIM", "ok": True, "seq": seq}), late)
    assert protocol.next_reply(seq) is None and late[0].closed


def test_a_reply_nobody_asked_for_is_dropped_with_its_fds(protocol: ClientProtocol) -> None:
    stray = fds(2)
    protocol.receive_data(line({"reply": "CLAIM", "ok": True, "seq": 42}), stray)
    assert all(fd.closed for fd in stray)


def test_a_reply_without_seq_answers_the_oldest_pending_request(protocol: ClientProtocol) -> None:
    protocol.send("STATUS", {})
    error = {"code": "bad-json", "message": "m", "hint": ""}
    protocol.receive_data(line({"reply": "?", "ok": False, "error": error}), [])
    assert protocol.granted == frozenset()  # the oldest was the HELLO
    protocol.receive_data(line({"reply": "?", "ok": False, "error": error}), [])
    reply = protocol.next_reply(1)
    assert reply is not None
    with pytest.raises(LuodError) as caught:
        verbs.body(reply)
    assert (caught.value.code, caught.value.seq, caught.value.cmd) == ("bad-json", None, "?")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "luod closed the connection"),
        (b"[1, 2]\n", "bad message"),
        (b"x" * 70_000, "bad stream"),
    ],
)
def test_a_broken_stream_breaks_the_connection_for_good(
    protocol: ClientProtocol, data: bytes, why: str
) -> None:
    sent = fds(1)
    with pytest.raises(ConnectionBroken, match=why):
        protocol.receive_data(data, sent)
    assert sent[0].closed
    with pytest.raises(ConnectionBroken, match=why):
        protocol.send("STATUS", {})
    with pytest.raises(ConnectionBroken, match=why):
        protocol.check()


def test_truncated_fds_break_the_connection_and_are_closed(protocol: ClientProtocol) -> None:
    arrived = fds(3)
    with pytest.raises(ConnectionBroken, match="MSG_CTRUNC"):
        protocol.receive_data(line({"reply": "LIST", "ok": True, "seq": 0}), arrived, True)
    assert all(fd.closed for fd in arrived)


def test_what_arrived_before_the_break_can_still_be_taken(protocol: ClientProtocol) -> None:
    protocol.receive_data(line({"event": "RESUME", "id": "vm1"}), [])
    with pytest.raises(ConnectionBroken):
        protocol.receive_data(b"", [])
    assert protocol.next_event("RESUME") is not None


def test_a_frame_cut_off_half_way_marks_the_connection_broken(protocol: ClientProtocol) -> None:
    protocol.send("STATUS", {})
    protocol.mark_broken(ConnectionBroken("cut off"))
    assert protocol.next_frame() is None  # nothing more is written into a cut stream
    with pytest.raises(ConnectionBroken, match="cut off"):
        protocol.check()


def test_close_closes_every_fd_still_held(protocol: ClientProtocol) -> None:
    seq = protocol.send("RECLAIM", {"id": "vm1"})
    reply_fds, event_fds = fds(2), fds(1)
    protocol.receive_data(
        line({"reply": "RECLAIM", "ok": True, "seq": seq, "files": []}), reply_fds
    )
    protocol.receive_data(line({"event": "START_PRESERVATION", "id": "vm2"}), event_fds)
    protocol.close()
    assert all(fd.closed for fd in [*reply_fds, *event_fds])
    with pytest.raises(ConnectionBroken, match="closed"):
        protocol.send("STATUS", {})


# --- the verbs: what each method returns, from luod's reply ---------------------------------
def ok(**fields: Any) -> Reply:
    return Reply({"reply": "X", "ok": True, "seq": 3, **fields})


def test_reply_fields_come_without_the_envelope() -> None:
    assert verbs.status().parse(ok(phase="idle")) == {"phase": "idle"}
    assert verbs.history().parse(ok(history=[{"id": "u"}])) == ([{"id": "u"}], None)
    assert verbs.list_vms(None).parse(ok(vms=[{"id": "a"}], next="a")) == ([{"id": "a"}], "a")


def test_a_reply_without_its_result_field_is_an_internal_error() -> None:
    with pytest.raises(LuodError) as caught:
        verbs.register("vm1").parse(ok())
    assert caught.value.code == "internal"


def test_reclaim_names_its_fds_and_refuses_a_count_mismatch() -> None:
    files = [{"name": "ram0"}, {"name": "ram1"}]
    got = verbs.reclaim("vm1", None).parse(Reply(ok(files=files).data, tuple(fds(2))))
    assert list(got) == ["ram0", "ram1"]
    for fd in got.values():
        fd.close()
    short = fds(1)
    with pytest.raises(LuodError) as caught:
        verbs.reclaim("vm1", None).parse(Reply(ok(files=files).data, tuple(short)))
    assert caught.value.code == "fd-count-mismatch" and short[0].closed


def test_an_error_reply_closes_its_fds_and_raises() -> None:
    sent = fds(1)
    error = {"code": "luo-enomem", "message": "m", "hint": "h", "errno": 12}
    with pytest.raises(LuodError) as caught:
        verbs.claim("vm2").parse(Reply({"reply": "CLAIM", "ok": False, "error": error}, (*sent,)))
    assert (caught.value.code, caught.value.errno) == ("luo-enomem", 12) and sent[0].closed


def test_preserve_takes_fds_or_numbers_and_a_kind() -> None:
    with OwnedFd(os.memfd_create("r")) as ram:
        call = verbs.preserve("vm1", {"ram0": ram, "ram1": 9, "dev": (10, "vfio")})
        assert call.fds == (ram.fileno(), 9, 10)
    assert [f["kind"] for f in call.fields["files"]] == ["memfd", "memfd", "vfio"]


def test_a_reply_already_in_when_its_request_is_abandoned_is_closed(
    protocol: ClientProtocol,
) -> None:
    seq = protocol.send("CLAIM", {"id": "vm2"})
    arrived = fds(1)
    protocol.receive_data(line({"reply": "CLAIM", "ok": True, "seq": seq}), arrived)
    protocol.abandon(seq)
    assert arrived[0].closed and protocol.next_reply(seq) is None


def test_a_reclaim_reply_with_unusable_names_is_refused_and_closed() -> None:
    sent = fds(2)
    reply = Reply({"reply": "RECLAIM", "ok": True, "files": [{"name": 1}, "ram1"]}, tuple(sent))
    with pytest.raises(LuodError) as caught:
        verbs.reclaim("vm1", None).parse(reply)
    assert caught.value.code == "internal" and all(fd.closed for fd in sent)
