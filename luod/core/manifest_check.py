"""Checked reading of the manifest and its journal (issue 13, finding 12).

The manifest is luod's own file, but it comes from disk or from the previous kernel's session
``luod``: a corrupt or planted one must give ``manifest-corrupt`` naming the field, never a
traceback, and nothing unchecked may get in (a VM id that is a path, a token that is a string).
Every number is finite and in range, every id and file name matches what the protocol accepts,
and nesting deeper than the JSON parser handles is refused as corruption.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final, TypeVar

from luod.core.model import (
    FILE_NAME,
    VM_ID,
    FileRecord,
    Mode,
    Owner,
    VmRecord,
    VmState,
    net_fields,
)

U64_MAX: Final = (1 << 64) - 1
ID_MAX: Final = (1 << 31) - 1  # uids, gids, pids
TIME_MAX: Final = 1e11  # seconds since the epoch: year 5138
_E = TypeVar("_E", bound=StrEnum)


class Corrupt(ValueError):
    """What is wrong, and where (``vms[0].files[1].token``).

    The place grows outwards as the error passes each enclosing reader (``under``), so that
    reading a valid manifest builds no text about places (a manifest of 1000 VMs is read on
    the way to serving after a kexec: issue 17)."""

    def __init__(self, problem: str, where: str = "") -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.problem, self.where = problem, where

    def under(self, outer: str) -> Corrupt:
        """The same error, seen from the object that holds this one at ``outer``."""
        return Corrupt(self.problem, f"{outer}.{self.where}" if self.where else outer)


def parse(raw: bytes) -> Any:
    """JSON without NaN, infinities or floats that overflow; nesting too deep is Corrupt."""
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise Corrupt("nested too deeply") from None


def _no_constant(name: str) -> float:
    raise Corrupt(f"{name} is not a number luod writes")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Corrupt(f"{text[:20]} overflows a float")
    return value


class Reader:
    """One JSON object being read: each accessor checks one key and names it when it fails
    (relative to ``where``; the enclosing readers add theirs: ``Corrupt.under``)."""

    __slots__ = ("data", "where")

    def __init__(self, data: object, where: str = "") -> None:
        if type(data) is not dict and not isinstance(data, Mapping):
            raise Corrupt(f"expected an object, got {type(data).__name__}", where)
        self.data: Mapping[str, Any] = data
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def raw(self, key: str, default: object = ...) -> Any:
        value = self.data.get(key, default)
        if value is ...:
            raise self.missing(key)
        return value

    def missing(self, key: str) -> Corrupt:
        return Corrupt("missing", self.at(key))

    def integer(self, key: str, low: int, high: int, default: object = ...) -> int:
        if (value := self.data.get(key, default)) is ...:  # raw(), inlined: 17 lookups a VM
            raise self.missing(key)
        if type(value) is not int or not low <= value <= high:  # bool is not int here
            raise Corrupt(f"{_shown(value)} is not an integer in [{low}, {high}]", self.at(key))
        return value

    def number(self, key: str, default: object = ...) -> float:
        if (value := self.data.get(key, default)) is ...:
            raise self.missing(key)
        if (type(value) is not float and type(value) is not int) or not 0 <= value <= TIME_MAX:
            raise Corrupt(f"{_shown(value)} is not a time in seconds", self.at(key))
        return float(value)

    def string(
        self, key: str, default: object = ..., pattern: re.Pattern[str] | None = None
    ) -> str:
        if (value := self.data.get(key, default)) is ...:
            raise self.missing(key)
        if type(value) is not str or (pattern is not None and not pattern.fullmatch(value)):
            raise Corrupt(f"{_shown(value)} is not a valid {key}", self.at(key))
        return value

    def member(self, key: str, members: Mapping[str, _E]) -> _E:
        """One of ``members`` (an enum's, by value: ``_by_value``), named by its value."""
        value = self.raw(key)
        member = members.get(value) if type(value) is str else None
        if member is None:
            raise Corrupt(f"{_shown(value)} is not a valid {key}", self.at(key))
        return member

    def boolean(self, key: str, default: object = ...) -> bool:
        if (value := self.data.get(key, default)) is ...:
            raise self.missing(key)
        if type(value) is not bool:
            raise Corrupt(f"{_shown(value)} is not true or false", self.at(key))
        return value

    def items(self, key: str, default: object = ...) -> list[Any]:
        if (value := self.data.get(key, default)) is ...:
            raise self.missing(key)
        if type(value) is not list:
            raise Corrupt(f"expected a list, got {type(value).__name__}", self.at(key))
        return value

    def mapping(self, key: str, default: object = ...) -> dict[str, Any]:
        if (value := self.data.get(key, default)) is ...:
            raise self.missing(key)
        if type(value) is not dict:
            raise Corrupt(f"expected an object, got {type(value).__name__}", self.at(key))
        return value


def vm_record(data: object, where: str) -> VmRecord:
    try:
        return _vm_record(Reader(data))
    except Corrupt as exc:
        raise exc.under(where) from None


def _vm_record(f: Reader) -> VmRecord:
    files: dict[str, FileRecord] = {}
    for index, item in enumerate(f.items("files", [])):
        try:
            record = _file_record(Reader(item))
        except Corrupt as exc:
            raise exc.under(f"files[{index}]") from None
        if record.name in files:
            raise Corrupt(f"file {record.name!r} listed twice", "files")
        files[record.name] = record
    rejected = f.mapping("rejected", {})
    if rejected and not all(type(k) is str and type(v) is str for k, v in rejected.items()):
        raise Corrupt("expected file names and texts", "rejected")
    return VmRecord(
        id=f.string("id", pattern=VM_ID),
        owner=owner(f.raw("owner"), "owner"),
        mode=f.member("mode", _MODES),
        state=f.member("state", _STATES),
        files=files,
        created=f.number("created", 0.0),
        updated=f.number("updated", 0.0),
        note=f.string("note", ""),
        rejected=dict(rejected),
        **net_fields(f.data),
    )


def owner(data: object, where: str) -> Owner:
    try:
        f = Reader(data)
        cgroup = f.raw("cgroup", None)
        if cgroup is not None and type(cgroup) is not str:
            raise Corrupt(f"{_shown(cgroup)} is not a cgroup path", "cgroup")
        return Owner(
            f.integer("uid", 0, ID_MAX),
            f.integer("gid", 0, ID_MAX),
            f.integer("pid", 0, ID_MAX),
            cgroup,
        )
    except Corrupt as exc:
        raise exc.under(where) from None


def file_record(data: object, where: str) -> FileRecord:
    try:
        return _file_record(Reader(data))
    except Corrupt as exc:
        raise exc.under(where) from None


def _file_record(f: Reader) -> FileRecord:
    return FileRecord(
        name=f.string("name", pattern=FILE_NAME),
        token=f.integer("token", 1, U64_MAX),
        kind=f.string("kind"),
        size=f.integer("size", 0, U64_MAX),
        reclaimed=f.boolean("reclaimed", False),
        exec_sealed=f.boolean("exec_sealed", False),
    )


def _by_value(kind: type[_E]) -> dict[str, _E]:
    return {member.value: member for member in kind}


_MODES: Final = _by_value(Mode)  # built once: a manifest of 1000 VMs asks 2000 times
_STATES: Final = _by_value(VmState)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


STAMP_KEYS: Final = ("realtime", "monotonic", "boottime")
DEADLINE_MAX: Final = 604800.0  # a week, as luod.toml allows


def carried_update(data: object, where: str) -> None:
    """The update record a luod carries across the kexec (``extra.update``): the shape that
    ``luod.core.timeline.UpdateRecord.from_dict`` and the blackout arithmetic rely on."""
    try:
        _carried_update(Reader(data))
    except Corrupt as exc:
        raise exc.under(where) from None


def _carried_update(f: Reader) -> None:
    f.string("id")
    f.string("outcome", "running")
    f.string("reason", "")
    request = Reader(f.mapping("request", {}), "request")
    for phase, seconds in request.mapping("deadlines", {}).items():
        ok = type(seconds) is float or type(seconds) is int
        if not ok or not 0 < seconds <= DEADLINE_MAX:
            raise Corrupt(f"{_shown(seconds)} is no deadline", f"request.deadlines.{phase}")
    for index, phase in enumerate(f.items("phases", [])):
        Reader(phase, f"phases[{index}]")
    for vm, steps in f.mapping("vms", {}).items():
        try:
            _stamps(steps)
        except Corrupt as exc:
            raise exc.under(f"vms.{vm}") from None
    try:
        _stamps(f.mapping("events", {}))
    except Corrupt as exc:
        raise exc.under("events") from None


def _stamps(data: object) -> None:
    """Each stamp's three clocks, finite and in range (after a kexec: 1000 VMs' freeze stamps;
    the common case, a float in range, is checked first)."""
    for name, stamp in Reader(data).data.items():
        if type(stamp) is not dict:
            Reader(stamp, name)
        for key in STAMP_KEYS:
            value = stamp.get(key, ...)
            if type(value) is float and -TIME_MAX <= value <= TIME_MAX:
                continue
            if value is ...:
                raise Corrupt("missing", f"{name}.{key}")
            if type(value) is not int or not -TIME_MAX <= value <= TIME_MAX:
                raise Corrupt(f"{_shown(value)} is not a time in seconds", f"{name}.{key}")
