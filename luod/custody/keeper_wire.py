"""The fd keeper's wire protocol: a pure codec, standard library only (the keeper imports it).

One request or reply per AF_UNIX SOCK_SEQPACKET message (the kernel keeps message boundaries
and carries SCM_RIGHTS with the message they belong to). ASCII text:

    PING          -> OK <keeper pid>
    PUT <name>    -> OK            exactly one fd attached; replaces an entry of that name
    DEL <name>    -> OK            unknown names too: the caller wants it gone, it is gone
    LIST          -> LIST <more>\\n<name>\\n...   one fd per name, <= 200 per message; more=1
                                                 until the last message (more=0)
    anything bad  -> ERR <reason>  the keeper has closed every fd that came with it
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

from luod.custody.fdname import name_problem

MAX_FDS_PER_MESSAGE: Final = 200
"""Below the kernel's SCM_MAX_FD (253): more fds in one message would fail with EINVAL."""
MAX_LIST_BYTES: Final = 32 * 1024
"""Keeps a LIST message well inside the default socket buffer (wmem_default, 208 KiB)."""
MAX_REQUEST_BYTES: Final = 512
REQUEST_FDS_ROOM: Final = 4
"""A request carries at most one fd; room for a few more lets us tell "two fds" (refused)
from "a flood" (truncated by the kernel, MSG_CTRUNC), and close whatever arrived."""

_EXPECTED_FDS: Final = {"PING": 0, "PUT": 1, "DEL": 0, "LIST": 0}
_NAMED: Final = frozenset({"PUT", "DEL"})


class WireError(ValueError):
    """A message that does not follow the protocol (its fds must be closed by the receiver)."""


# NamedTuples, not dataclasses: the keeper imports this module, and its start is on the path
# after every kexec of a host without systemd's fd store; dataclasses (with inspect, ast, dis)
# was 7 of its 27 ms of imports (bench/NOTES.md "Start-up").
class Request(NamedTuple):
    verb: str
    name: str = ""


class Reply(NamedTuple):
    ok: bool
    detail: str = ""
    names: tuple[str, ...] = ()
    more: bool = False


def encode_request(verb: str, name: str = "") -> bytes:
    return f"{verb} {name}".encode("ascii") if name else verb.encode("ascii")


def parse_request(data: bytes, nfds: int, flags: int) -> Request:
    _check_flags(flags)
    text = _ascii(data)
    verb, _, name = text.partition(" ")
    if verb not in _EXPECTED_FDS:
        raise WireError(f"unknown command {verb[:32]!r}")
    if verb in _NAMED:
        problem = name_problem(name)
        if problem is not None:
            raise WireError(f"{verb}: {problem}")
    elif name:
        raise WireError(f"{verb} takes no argument")
    if nfds != _EXPECTED_FDS[verb]:
        raise WireError(f"{verb} came with {nfds} fds, expected {_EXPECTED_FDS[verb]}")
    return Request(verb, name)


def encode_ok(detail: str = "") -> bytes:
    return f"OK {detail}".encode("ascii") if detail else b"OK"


def encode_error(reason: str) -> bytes:
    return ("ERR " + reason).encode("ascii", "replace")


def list_chunks(names: Sequence[str]) -> Iterator[tuple[bytes, Sequence[str]]]:
    """LIST reply messages: (payload, the names whose fds go with it, in order)."""
    start = 0
    while True:
        end, size = start, 0
        while end < len(names) and end - start < MAX_FDS_PER_MESSAGE:
            if size + len(names[end]) + 1 > MAX_LIST_BYTES:
                break
            size += len(names[end]) + 1
            end += 1
        chunk = names[start:end]
        more = end < len(names)
        yield "\n".join([f"LIST {int(more)}", *chunk]).encode("ascii"), chunk
        if not more:
            return
        start = end


def parse_reply(data: bytes, nfds: int, flags: int) -> Reply:
    _check_flags(flags)
    text = _ascii(data)
    if text == "OK" or text.startswith("OK "):
        reply = Reply(ok=True, detail=text[3:])
    elif text.startswith("ERR "):
        reply = Reply(ok=False, detail=text[4:])
    elif text.startswith("LIST "):
        header, *names = text.split("\n")
        if header not in ("LIST 0", "LIST 1"):
            raise WireError(f"bad LIST header {header[:32]!r}")
        reply = Reply(ok=True, names=tuple(names), more=header == "LIST 1")
    else:
        raise WireError(f"unexpected reply {text[:32]!r}")
    if nfds != len(reply.names):
        raise WireError(f"reply came with {nfds} fds for {len(reply.names)} names")
    return reply


def _check_flags(flags: int) -> None:
    # MSG_CTRUNC: the kernel dropped fds that did not fit (or could not be installed: EMFILE).
    if flags & socket.MSG_CTRUNC:
        raise WireError("fds were cut off (MSG_CTRUNC): too many fds or out of fd numbers")
    if flags & socket.MSG_TRUNC:
        raise WireError("message too long (MSG_TRUNC)")


def _ascii(data: bytes) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise WireError("message is not ASCII text") from None
