"""The keeper's wire codec and peer check: pure functions, no sockets."""

from __future__ import annotations

import socket

import pytest

from luod.custody.keeper import peer_allowed
from luod.custody.keeper_wire import (
    MAX_FDS_PER_MESSAGE,
    MAX_LIST_BYTES,
    Reply,
    Request,
    WireError,
    encode_request,
    list_chunks,
    parse_reply,
    parse_request,
)


@pytest.mark.parametrize(
    ("data", "nfds", "request_"),
    [
        (b"PING", 0, Request("PING")),
        (b"PUT luod.vm1", 1, Request("PUT", "luod.vm1")),
        (b"DEL luod.vm1", 0, Request("DEL", "luod.vm1")),
        (b"LIST", 0, Request("LIST")),
    ],
)
def test_requests_parse(data: bytes, nfds: int, request_: Request) -> None:
    assert parse_request(data, nfds, 0) == request_
    assert encode_request(request_.verb, request_.name) == data


@pytest.mark.parametrize(
    ("data", "nfds", "flags", "reason"),
    [
        (b"\xff\xfe", 0, 0, "not ASCII"),
        (b"HELLO", 0, 0, "unknown command"),
        (b"PUT luod.vm1", 0, 0, "PUT came with 0 fds, expected 1"),
        (b"PUT luod.vm1", 2, 0, "PUT came with 2 fds"),
        (b"PUT", 1, 0, "the name is empty"),
        (b"PUT luod:vm1", 1, 0, "contains ':'"),
        (b"DEL luod.vm1", 1, 0, "DEL came with 1 fds"),
        (b"LIST", 1, 0, "LIST came with 1 fds"),
        (b"LIST all", 0, 0, "takes no argument"),
        (b"PUT luod.vm1", 1, socket.MSG_CTRUNC, "MSG_CTRUNC"),
        (b"PUT luod.vm1", 1, socket.MSG_TRUNC, "MSG_TRUNC"),
    ],
)
def test_bad_requests_are_refused(data: bytes, nfds: int, flags: int, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        parse_request(data, nfds, flags)


def test_list_replies_stay_under_the_fd_and_byte_caps() -> None:
    names = [f"luod.{i:0250d}" for i in range(2000)]  # 255-byte names: the byte cap bites first
    chunks = list(list_chunks(names))
    assert [name for _payload, chunk in chunks for name in chunk] == names
    assert all(len(chunk) <= MAX_FDS_PER_MESSAGE for _payload, chunk in chunks)
    assert all(len(payload) <= MAX_LIST_BYTES + 8 for payload, _chunk in chunks)
    replies = [parse_reply(payload, len(chunk), 0) for payload, chunk in chunks]
    assert [reply.more for reply in replies] == [True] * (len(chunks) - 1) + [False]


def test_an_empty_list_is_one_final_message() -> None:
    [(payload, chunk)] = list(list_chunks([]))
    assert parse_reply(payload, 0, 0) == Reply(ok=True, names=(), more=False)
    assert chunk == []


def test_replies_must_carry_one_fd_per_name() -> None:
    with pytest.raises(WireError, match="1 fds for 2 names"):
        parse_reply(b"LIST 0\na\nb", 1, 0)
    with pytest.raises(WireError, match="MSG_CTRUNC"):
        parse_reply(b"LIST 0\na", 1, socket.MSG_CTRUNC)


def test_replies_parse() -> None:
    assert parse_reply(b"OK 1234", 0, 0) == Reply(ok=True, detail="1234")
    assert parse_reply(b"ERR no", 0, 0) == Reply(ok=False, detail="no")


def test_only_the_keepers_own_uid_may_talk_to_it() -> None:
    assert peer_allowed(0, 0)
    assert peer_allowed(1000, 1000)
    assert not peer_allowed(1000, 0)
    assert not peer_allowed(0, 1000)  # not even root: a user's keeper is that user's
