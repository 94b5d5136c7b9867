"""VMM socket requests to fuzz with, structure-aware: built from the protocol's own JSON schemas
(api/schemas/request-*.json), every field valid or hostile (long strings, non-ASCII text, NUL,
lone surrogates, huge or non-finite numbers, deep nesting, wrong types, unknown fields), written
as JSON (ASCII-escaped or raw UTF-8), sometimes mutated byte by byte."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fuzz.draw import Draw, RandomDraw, one_in, pick

SCHEMAS = Path(__file__).resolve().parents[2] / "api" / "schemas"
VM_POOL = ("vm0", "vm1", "vm2", "agent")  # ids that come back, so scripts build up state
NAME_POOL = ("ram0", "ram1", "rom")
LONG_CHARS = ("x", "é", "😀", "\u2028", '"', "\\", "\x00", "\ud800", "\n", "\x7f", "€", "\t")
LENGTHS = (58, 65, 513, 4097, 10_000, 21_846, 30_000, 65_536, 70_000)
TEXT_CHARS = 'aZ09._-/ é😀\u2028"\\\x01\t€'


class Raw(str):
    """JSON text written as it is (numbers JSON cannot hold as Python values, deep nesting)."""


NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    1.5,
    -0.0,
    2**31,
    -(2**63),
    2**64,
    Raw("1" + "0" * 400),
    Raw("1e400"),
    Raw("-1e400"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("1E-400"),
)
STRINGS: tuple[str, ...] = (
    "",
    " ",
    "../../etc/passwd",
    "/dev/zero",
    "/etc/shadow",
    "vm0\n",
    "vm0\x00",
    "VM0",
    "a" * 57,
    "a" * 58,
    "a" * 64,
    "luod",
    "-x",
    ".x",
    "memfd",
    "guest_memfd",
    "ram0",
    "FREEZE",
)


@dataclass(frozen=True)
class Request:
    """One generated request: its text, command and how many fds it asks for."""

    line: bytes
    cmd: str
    files: int  # entries of PRESERVE's files (the fds a well-behaved client attaches)


@functools.cache
def request_schemas() -> dict[str, dict[str, Any]]:
    return {
        path.stem.removeprefix("request-").upper(): json.loads(path.read_text())
        for path in sorted(SCHEMAS.glob("request-*.json"))
    }


@functools.cache
def _defs() -> dict[str, Any]:
    defs: dict[str, Any] = json.loads((SCHEMAS / "common.json").read_text())["$defs"]
    return defs


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """$ref and allOf flattened (later parts win), enough for these schemas."""
    schema = dict(schema)
    if "$ref" in schema:
        schema = {**resolve(_defs()[schema["$ref"].rsplit("/", 1)[1]]), **schema}
        del schema["$ref"]
    for part in schema.pop("allOf", []):
        schema = {**schema, **resolve(part)}
    return schema


# --- values ------------------------------------------------------------------------------
def valid(schema: dict[str, Any], draw: Draw, key: str = "") -> Any:
    schema = resolve(schema)
    if "enum" in schema:
        return pick(draw, schema["enum"])
    if "oneOf" in schema:
        return valid(pick(draw, schema["oneOf"]), draw, key)
    kind = schema.get("type")
    if kind == "string":
        return _string(schema, draw, key)
    if kind == "integer":
        return schema.get("minimum", 0) + pick(draw, (0, 1, draw.below(1000), 2**31 - 1))
    if kind == "number":
        return pick(draw, (0.5, 1, 30, 600.0, 3600))
    if kind == "boolean":
        return bool(draw.below(2))
    if kind == "array":
        return _array(schema, draw, key)
    if kind == "object":
        return _object(schema, draw)
    return None


def _string(schema: dict[str, Any], draw: Draw, key: str) -> str:
    if schema.get("pattern", "").startswith("^[A-Za-z0-9]") and not one_in(draw, 4):
        return pick(draw, VM_POOL if key == "id" else NAME_POOL)
    if "pattern" in schema and schema["pattern"] != "^[^\\u0000]*$":
        return from_pattern(schema["pattern"], draw)
    limit = min(schema.get("maxLength", 64), pick(draw, (8, 64, 4096)))
    size = max(schema.get("minLength", 0), draw.below(limit + 1))
    return _text(draw, TEXT_CHARS.replace("\x00", ""), size)


def _text(draw: Draw, alphabet: str, size: int) -> str:
    """``size`` characters: a drawn stretch of up to 16 from ``alphabet``, repeated."""
    stretch = "".join(pick(draw, alphabet) for _ in range(min(size, 1 + draw.below(16))))
    return (stretch * (size // max(len(stretch), 1) + 1))[:size]


def _array(schema: dict[str, Any], draw: Draw, key: str) -> list[Any]:
    low, high = schema.get("minItems", 0), schema.get("maxItems", 8)
    size = pick(draw, (low, min(low + 1, high), low + draw.below(min(high, 4) - low + 1), high))
    items = [valid(schema.get("items", {}), draw, key) for _ in range(size)]
    if schema.get("uniqueItems"):
        seen: dict[str, Any] = {}
        for item in items:
            seen.setdefault(json.dumps(item, sort_keys=True), item)
        items = list(seen.values())
    return items


def _object(schema: dict[str, Any], draw: Draw) -> dict[str, Any]:
    result = {}
    for key, sub in schema.get("properties", {}).items():
        if key in schema.get("required", ()) or draw.below(2):
            result[key] = valid(sub, draw, key)
    names = schema.get("propertyNames")
    extra = schema.get("additionalProperties")
    if isinstance(names, dict) and isinstance(extra, dict):
        for _ in range(draw.below(3)):
            result[str(valid(names, draw))] = valid(extra, draw)
    return result


_TOKEN = re.compile(r"\[(\^?)((?:\\.|[^\]])*)\]|\\(.)|([^\[\\{}*+^$])")
_QUANTIFIER = re.compile(r"\{(\d+),(\d+)\}|([*+])")


def from_pattern(pattern: str, draw: Draw) -> str:
    """A string matching ``pattern``, for the subset the schemas use: classes, literals and
    {m,n}/*/+ quantifiers, anchored."""
    out, at = [], 0
    body = pattern.strip("^$")
    while at < len(body):
        token = _TOKEN.match(body, at)
        assert token, f"pattern {pattern!r} at {at}"
        at = token.end()
        chars = _class(token) if token[2] is not None else (token[3] or token[4])
        low = high = 1
        if quantifier := _QUANTIFIER.match(body, at):
            at = quantifier.end()
            if quantifier[3]:
                low, high = (0 if quantifier[3] == "*" else 1), 8
            else:
                low, high = int(quantifier[1]), int(quantifier[2])
        count = pick(draw, (low, high, low + draw.below(high - low + 1)))
        out += [pick(draw, chars) for _ in range(count)]
    return "".join(out)


def _class(token: re.Match[str]) -> str:
    spec = token[2].encode().decode("unicode_escape")
    chars = ""
    at = 0
    while at < len(spec):
        if at + 2 < len(spec) and spec[at + 1] == "-":
            chars += "".join(chr(c) for c in range(ord(spec[at]), ord(spec[at + 2]) + 1))
            at += 3
        else:
            chars += spec[at]
            at += 1
    if token[1]:  # negated: printable text outside the class
        return "".join(c for c in TEXT_CHARS if c not in chars)
    return chars


def hostile(draw: Draw) -> Any:
    """A value no field accepts, or one at a limit."""
    return pick(draw, _HOSTILE)(draw)


def _long_text(draw: Draw) -> str:
    size = pick(draw, LENGTHS)
    if draw.below(2):
        return pick(draw, LONG_CHARS) * size
    return _text(draw, "".join(LONG_CHARS), size)


def _nested(draw: Draw) -> Raw:
    depth = pick(draw, (10, 1000, 10_000, 30_000))
    opener, closer = pick(draw, (("[", "]"), ('{"a":', "}")))
    return Raw(opener * depth + "0" + closer * depth)


_HOSTILE: tuple[Callable[[Draw], Any], ...] = (
    _long_text,
    _long_text,
    lambda draw: pick(draw, NUMBERS),
    lambda draw: pick(draw, (True, False, None)),
    lambda draw: pick(draw, STRINGS),
    lambda draw: draw.raw(pick(draw, (1, 16, 200))).decode("latin-1"),
    lambda draw: [pick(draw, NAME_POOL) + str(n) for n in range(pick(draw, (0, 64, 65, 300)))],
    lambda draw: pick(draw, ([], {}, [None], {"name": "ram0", "kind": "pipe"}, ["ram0", "ram0"])),
    lambda draw: {pick(draw, STRINGS): hostile(draw)},
    _nested,
)


# --- requests ----------------------------------------------------------------------------
def request(draw: Draw, paths: tuple[str, ...] = ()) -> Request:
    """One request: a schema's command, its fields valid or (now and then) hostile; ``paths``
    are files worth naming as a kernel or initrd (a real image, a FIFO, a device...)."""
    cmd = pick(draw, sorted(request_schemas()))
    schema = request_schemas()[cmd]
    message: dict[str, Any] = {"cmd": _command(cmd, schema, draw)}
    for key, sub in schema["properties"].items():
        if key == "cmd" or (key not in schema.get("required", ()) and not draw.below(2)):
            continue
        if key in schema.get("required", ()) and one_in(draw, 12):
            continue  # a required field missing
        if one_in(draw, 5):
            message[key] = hostile(draw)
        elif key in ("kernel", "initrd") and paths and draw.below(2):
            message[key] = pick(draw, paths)
        else:
            message[key] = valid(sub, draw, key)
    if one_in(draw, 10):
        message[pick(draw, ("extra", "fds", "cmd2", "é" * 3))] = hostile(draw)
    files = message.get("files")
    count = len(files) if cmd == "PRESERVE" and isinstance(files, list) else 0
    return Request(encode(message, ascii_only=bool(draw.below(2))), cmd, count)


def _command(cmd: str, schema: dict[str, Any], draw: Draw) -> Any:
    if one_in(draw, 16):
        return pick(draw, (hostile(draw), "FLY", cmd + "X", cmd.lower(), "é" * 30_000))
    return from_pattern(schema["properties"]["cmd"]["pattern"], draw)


def encode(value: Any, *, ascii_only: bool) -> bytes:
    """JSON of ``value`` with Raw parts as they are; lone surrogates pass as (invalid) UTF-8."""
    return _json(value, ascii_only).encode("utf-8", "surrogatepass")


def _json(value: Any, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = (f"{_json(str(k), ascii_only)}:{_json(v, ascii_only)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def mutate(line: bytes, draw: Draw) -> bytes:
    """One byte-level change: flip, cut, insert, splice or replace."""
    if not line:
        return draw.raw(16)
    at = draw.below(len(line))
    choice = draw.below(6)
    if choice == 0:
        return line[:at] + bytes([line[at] ^ (1 << draw.below(8))]) + line[at + 1 :]
    if choice == 1:
        return line[:at] + line[at + 1 + draw.below(64) :]
    if choice == 2:
        junk = pick(draw, (b"\xff", b"\xc3", b"\x00", b"\n", b"}", b'"', b"\\u", b"\xed\xa0\x80"))
        return line[:at] + junk + line[at:]
    if choice == 3:
        return line[:at]
    if choice == 4:
        return line[:at] + line + line[at:]
    return line[:at] + draw.raw(1 + draw.below(32)) + line[at:]


# --- what a peer sends -------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """One sendmsg: on connection ``conn``, ``data`` with ``fds`` fds attached."""

    conn: int
    data: bytes
    fds: int = 0
    preserving: bool = False


def script(
    draw: Draw, connections: int = 1, requests: int = 6, paths: tuple[str, ...] = ()
) -> list[Chunk]:
    """What peers send: requests (some mutated, some cut in two, some glued together), each
    with the fds it attaches (PRESERVE's files, or a wrong number, or more than 64), and now
    and then junk: random bytes, a line over 64 KiB, blank lines."""
    chunks: list[Chunk] = []
    for _ in range(1 + draw.below(requests)):
        conn = draw.below(connections)
        if one_in(draw, 40):
            chunks.append(Chunk(conn, _junk(draw), draw.below(3)))
            continue
        req = request(draw, paths)
        line = mutate(req.line, draw) if one_in(draw, 6) else req.line
        line += b"" if one_in(draw, 30) else b"\n"
        fds = _fd_count(draw, req)
        if one_in(draw, 6) and len(line) > 1:
            cut = 1 + draw.below(len(line) - 1)
            first_has_fds = bool(draw.below(2))
            chunks.append(Chunk(conn, line[:cut], fds if first_has_fds else 0, req.files > 0))
            chunks.append(Chunk(conn, line[cut:], 0 if first_has_fds else fds, req.files > 0))
        else:
            chunks.append(Chunk(conn, line, fds, req.files > 0))
    return chunks


def _fd_count(draw: Draw, req: Request) -> int:
    if one_in(draw, 60):
        return 65 + draw.below(6)  # more than a request may carry
    if req.files:
        return req.files if not one_in(draw, 6) else max(0, req.files + pick(draw, (-1, 1, 3)))
    return 1 + draw.below(3) if one_in(draw, 10) else 0


def _junk(draw: Draw) -> bytes:
    return pick(draw, (draw.raw(64), b"x" * 70_000, b"\n" * 10, b"{}\n", b"\x00\n", b"[]\n"))


# --- every request type, each field hostile in turn ----------------------------------------
REPROS: tuple[bytes, ...] = (  # issue 13 finding 1, as reported
    json.dumps({"cmd": "REGISTER", "id": "é" * 30_000}).encode(),
    json.dumps({"cmd": "é" * 30_000}).encode(),
    json.dumps({"cmd": "PRESERVE", "id": "vm0", "files": ["é" * 30_000]}).encode(),
    json.dumps({"cmd": "RECLAIM", "id": "vm0", "files": ["é" * 30_000]}).encode(),
)
FIXED_HOSTILE: tuple[Any, ...] = (
    "é" * 30_000,  # 60 KB of UTF-8, 180 KB once JSON escapes it
    "😀" * 16_000,
    '"' * 30_000,
    "\\" * 30_000,
    "\x00" * 10_000,
    "\u2028" * 10_000,
    "\ud800" * 5_000,  # lone surrogates: invalid UTF-8 on the wire
    "x" * 70_000,  # the line is over 64 KiB: the connection is dropped
    ["é" * 30_000],
    {"é" * 1000: "é" * 20_000},
    Raw("1e400"),
    Raw("1" + "0" * 4000),
    Raw("NaN"),
    Raw("-Infinity"),
    Raw("[" * 30_000 + "]" * 30_000),
    Raw('{"a":' * 10_000 + "0" + "}" * 10_000),
    -1,
    2**64,
    True,
    None,
    [],
    {},
)


def systematic() -> list[Request]:
    """The reported repros, then every request type: once valid, then with each of its fields
    (and an unknown one) set to each of ``FIXED_HOSTILE``, the others valid; ASCII-escaped and
    raw UTF-8 alternately."""
    out = [Request(line, "?", 0) for line in REPROS]
    draw = RandomDraw("systematic")
    for cmd, schema in sorted(request_schemas().items()):
        base = {"cmd": cmd.lower() if draw.below(2) else cmd}
        for key, sub in schema["properties"].items():
            if key != "cmd" and key in schema.get("required", ()):
                base[key] = valid(sub, draw, key)
        files = len(base["files"]) if cmd == "PRESERVE" else 0
        out.append(Request(encode(base, ascii_only=False), cmd, files))
        for number, (key, value) in enumerate(
            (key, value) for key in [*schema["properties"], "unknown"] for value in FIXED_HOSTILE
        ):
            message = {**base, key: value}
            out.append(Request(encode(message, ascii_only=number % 2 == 0), cmd, files))
    return out
