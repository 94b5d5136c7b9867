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
from typing import Any, Final

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


class Corrupt(ValueError):
    """What is wrong, and where (``vms[0].files[1].token``)."""


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
    """One JSON object being read: each accessor checks one key and names it when it fails."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise Corrupt(f"{where}: expected an object, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def raw(self, key: str, default: object = ...) -> Any:
        if key in self.data:
            return self.data[key]
        if default is ...:
            raise Corrupt(f"{self.at(key)}: missing")
        return default

    def integer(self, key: str, low: int, high: int, default: object = ...) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Corrupt(f"{self.at(key)}: {_shown(value)} is not an integer in [{low}, {high}]")
        return value

    def number(self, key: str, default: object = ...) -> float:
        value = self.raw(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not 0 <= value <= TIME_MAX:
            raise Corrupt(f"{self.at(key)}: {_shown(value)} is not a time in seconds")
        return float(value)

    def string(
        self, key: str, default: object = ..., pattern: re.Pattern[str] | None = None
    ) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise Corrupt(f"{self.at(key)}: {_shown(value)} is not a valid {key}")
        return value

    def boolean(self, key: str, default: object = ...) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise Corrupt(f"{self.at(key)}: {_shown(value)} is not true or false")
        return value

    def items(self, key: str, default: object = ...) -> list[Any]:
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise Corrupt(f"{self.at(key)}: expected a list, got {type(value).__name__}")
        return value

    def mapping(self, key: str, default: object = ...) -> dict[str, Any]:
        value = self.raw(key, default)
        if not isinstance(value, dict):
            raise Corrupt(f"{self.at(key)}: expected an object, got {type(value).__name__}")
        return value


def vm_record(data: object, where: str) -> VmRecord:
    f = Reader(data, where)
    files: dict[str, FileRecord] = {}
    for index, item in enumerate(f.items("files", [])):
        record = file_record(item, f"{f.at('files')}[{index}]")
        if record.name in files:
            raise Corrupt(f"{f.at('files')}: file {record.name!r} listed twice")
        files[record.name] = record
    rejected = f.mapping("rejected", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in rejected.items()):
        raise Corrupt(f"{f.at('rejected')}: expected file names and texts")
    return VmRecord(
        id=f.string("id", pattern=VM_ID),
        owner=owner(f.raw("owner"), f.at("owner")),
        mode=Mode(f.string("mode", pattern=_MODES)),
        state=VmState(f.string("state", pattern=_STATES)),
        files=files,
        created=f.number("created", 0.0),
        updated=f.number("updated", 0.0),
        note=f.string("note", ""),
        rejected=dict(rejected),
        **net_fields(f.data),
    )


def owner(data: object, where: str) -> Owner:
    f = Reader(data, where)
    cgroup = f.raw("cgroup", None)
    if cgroup is not None and not isinstance(cgroup, str):
        raise Corrupt(f"{f.at('cgroup')}: {_shown(cgroup)} is not a cgroup path")
    return Owner(
        f.integer("uid", 0, ID_MAX),
        f.integer("gid", 0, ID_MAX),
        f.integer("pid", 0, ID_MAX),
        cgroup,
    )


def file_record(data: object, where: str) -> FileRecord:
    f = Reader(data, where)
    return FileRecord(
        name=f.string("name", pattern=FILE_NAME),
        token=f.integer("token", 1, U64_MAX),
        kind=f.string("kind"),
        size=f.integer("size", 0, U64_MAX),
        reclaimed=f.boolean("reclaimed", False),
        exec_sealed=f.boolean("exec_sealed", False),
    )


def _one_of(kind: Any) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(str(member)) for member in kind))


_MODES: Final = _one_of(Mode)  # built once: a manifest of 1000 VMs asks 2000 times
_STATES: Final = _one_of(VmState)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


STAMP_KEYS: Final = ("realtime", "monotonic", "boottime")
DEADLINE_MAX: Final = 604800.0  # a week, as luod.toml allows


def carried_update(data: object, where: str) -> None:
    """The update record a luod carries across the kexec (``extra.update``): the shape that
    ``luod.core.timeline.UpdateRecord.from_dict`` and the blackout arithmetic rely on."""
    f = Reader(data, where)
    f.string("id")
    f.string("outcome", "running")
    f.string("reason", "")
    request = Reader(f.mapping("request", {}), f.at("request"))
    deadlines = request.mapping("deadlines", {})
    for phase, seconds in deadlines.items():
        ok = isinstance(seconds, int | float) and not isinstance(seconds, bool)
        if not ok or not 0 < seconds <= DEADLINE_MAX:
            raise Corrupt(f"{request.at('deadlines')}.{phase}: {_shown(seconds)} is no deadline")
    for index, phase in enumerate(f.items("phases", [])):
        Reader(phase, f"{f.at('phases')}[{index}]")
    for vm, steps in f.mapping("vms", {}).items():
        _stamps(steps, f"{f.at('vms')}.{vm}")
    _stamps(f.mapping("events", {}), f.at("events"))


def _stamps(data: object, where: str) -> None:
    for name, stamp in Reader(data, where).data.items():
        s = Reader(stamp, f"{where}.{name}")
        for key in STAMP_KEYS:
            value = s.raw(key)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not -TIME_MAX <= value <= TIME_MAX:
                raise Corrupt(f"{s.at(key)}: {_shown(value)} is not a time in seconds")
