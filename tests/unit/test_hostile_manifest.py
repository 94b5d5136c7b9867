"""Corrupt manifests (issue 13, finding 12): every one is ``manifest-corrupt`` with the field
named, never a traceback, and nothing unchecked (a string token, a vm id that is a path) gets in."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from luod.core import manifest, timeline
from luod.core.clock import Stamp
from luod.core.model import FileRecord, Mode, Owner, VmRecord
from luod.errors import LuodError

Edit = Callable[[dict[str, Any]], None]
HUGE_INT = "1" + "0" * 400  # 10**400: a valid JSON integer Python reads exactly


def valid() -> dict[str, Any]:
    vm = VmRecord("vm1", Owner(0, 0, 1), Mode.HANDOVER)
    vm.files["ram0"] = FileRecord("ram0", 1, "memfd", 4096)
    saved = manifest.Manifest("boot", "7.2.13-luo", 1, {"vm1": vm})
    return dict(json.loads(saved.to_json()))


def dumped(data: dict[str, Any], **raw: str) -> bytes:
    """``data`` as JSON, with each key of ``raw`` (a dotted path) replaced by raw JSON text."""
    text = json.dumps(data)
    for key, value in raw.items():
        marker = f'"@@{key}@@"'
        assert marker in text, key
        text = text.replace(marker, value)
    return text.encode()


def with_marker(path: str) -> dict[str, Any]:
    data = valid()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = f"@@{path}@@"
    return data


def corrupt(raw: bytes) -> LuodError:
    with pytest.raises(LuodError) as info:
        manifest.Manifest.from_json(raw, "manifest.json")
    assert info.value.code == "manifest-corrupt", info.value
    return info.value


NUMBERS = ["version", "liveupdate_number", "written", "vms.0.created", "vms.0.updated"]


@pytest.mark.parametrize("literal", ["1e400", "-1e400", HUGE_INT, "NaN", "Infinity"])
@pytest.mark.parametrize("path", NUMBERS)
def test_an_overflowing_number_is_manifest_corrupt(path: str, literal: str) -> None:
    error = corrupt(dumped(with_marker(path), **{path: literal}))
    if literal == HUGE_INT:  # parsed, then out of range: the field is named
        assert path.rsplit(".", 1)[-1] in error.message
    else:  # refused by the parser
        assert "overflows" in error.message or "not a number" in error.message


@pytest.mark.parametrize("where", ["top", "extra"])
def test_100000_levels_of_nesting_are_manifest_corrupt(where: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    raw = deep.encode() if where == "top" else dumped(with_marker("extra"), extra=deep)
    corrupt(raw)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("vms.0.files.0.token", "1"),
        ("vms.0.files.0.token", -1),
        ("vms.0.files.0.token", 1 << 64),
        ("vms.0.files.0.size", "4096"),
        ("vms.0.files.0.size", -1),
        ("vms.0.files.0.name", "../ram0"),
        ("vms.0.files.0.reclaimed", "no"),
        ("vms.0.id", "../../etc/passwd"),
        ("vms.0.id", ""),
        ("vms.0.owner.uid", "0"),
        ("vms.0.owner.uid", -5),
        ("vms.0.mode", "sideways"),
        ("vms.0.state", 3),
        ("vms.0.note", ["x"]),
        ("vms.0.files", {"ram0": 1}),
        ("vms", {}),
        ("boot_id", 7),
        ("kexec_pending", "yes"),
        ("extra", []),
    ],
)
def test_a_value_of_the_wrong_type_or_shape_is_refused(path: str, value: object) -> None:
    data = with_marker(path)
    error = corrupt(dumped(data, **{path: json.dumps(value)}))
    assert path.rsplit(".", 1)[-1] in error.message


def test_a_vm_listed_twice_is_refused() -> None:
    data = valid()
    data["vms"].append(data["vms"][0])
    assert "twice" in corrupt(json.dumps(data).encode()).message


def test_the_valid_manifest_still_loads() -> None:
    loaded = manifest.Manifest.from_json(json.dumps(valid()).encode(), "manifest.json")
    assert loaded.vms["vm1"].files["ram0"].token == 1


def test_a_journal_line_with_a_path_for_an_id_is_not_replayed(tmp_path: Path) -> None:
    (tmp_path / manifest.FILENAME).write_text(json.dumps(valid()))
    evil = valid()["vms"][0] | {"id": "../../etc/passwd"}
    (tmp_path / manifest.JOURNAL).write_text(json.dumps({"vm": evil}) + "\n")
    loaded = manifest.read_disk(tmp_path)
    assert loaded is not None and list(loaded.vms) == ["vm1"]


def carried(**changes: Any) -> dict[str, Any]:
    """A manifest carrying an update record across the kexec, with ``changes`` to the record."""
    stamp = {"realtime": 1.0, "monotonic": 1.0, "boottime": 1.0}
    record = timeline.UpdateRecord(request={"deadlines": {"reclaiming": 60}})
    record.vm_event("vm1", "freeze_ack", Stamp(1.0, 1.0, 1.0))
    assert record.to_dict()["vms"]["vm1"]["freeze_ack"] == stamp
    data = valid()
    data["extra"] = {"update": {**record.to_dict(), **changes}}
    return data


def test_a_carried_update_record_loads() -> None:
    loaded = manifest.Manifest.from_json(json.dumps(carried()).encode(), "manifest.json")
    assert loaded.extra["update"]["vms"]["vm1"]["freeze_ack"]["realtime"] == 1.0


@pytest.mark.parametrize(
    "changes",
    [
        {"vms": {"vm1": {"freeze_ack": {"realtime": "HUGE", "monotonic": 1, "boottime": 1}}}},
        {"events": {"kernel_boot": {"realtime": 1}}},
        {"vms": []},
        {"phases": {"from": "idle"}},
        {"request": {"deadlines": {"reclaiming": "soon"}}},
        {"request": {"deadlines": {"reclaiming": -1}}},
        {"id": 7},
        {"outcome": None},
    ],
    ids=[
        "10**400",
        "stamp-missing",
        "vms-list",
        "phases-dict",
        "deadline-str",
        "deadline-neg",
        "id",
        "outcome",
    ],
)
def test_a_bad_carried_update_record_is_manifest_corrupt(changes: dict[str, Any]) -> None:
    """Timestamps of 10**400 in the update record the manifest carries across the kexec made
    luod fail later, in the blackout arithmetic; a wrong shape failed when it was reopened."""
    text = json.dumps(carried(**changes)).replace('"HUGE"', HUGE_INT)
    error = corrupt(text.encode())
    assert "extra.update" in error.message


def _two_vms() -> dict[str, Any]:
    data = valid()
    second = json.loads(json.dumps(data["vms"][0]))
    second["id"] = "vm2"
    data["vms"].append(second)
    return data


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d["vms"][1]["files"][0].update(token="1"), "vms[1].files[0].token: '1' is"),
        (lambda d: d["vms"][1].update(owner=7), "vms[1].owner: expected an object, got int"),
        (lambda d: d["vms"][1]["owner"].pop("gid"), "vms[1].owner.gid: missing"),
        (lambda d: d["vms"][1]["files"].append(d["vms"][1]["files"][0]), "vms[1].files: file"),
        (lambda d: d["vms"][1].update(rejected={"ram0": 1}), "vms[1].rejected: expected"),
        (lambda d: d["vms"][1].update(mode="Handover"), "vms[1].mode: 'Handover' is not"),
        (lambda d: d["vms"].append(d["vms"][0]), "vms[2]: VM 'vm1' listed twice"),
    ],
    ids=["token", "owner", "gid", "file-twice", "rejected", "mode", "vm-twice"],
)
def test_the_error_names_the_whole_path_to_the_bad_field(edit: Edit, where: str) -> None:
    """The place is added as the error leaves each enclosing object (nothing is built for a
    valid manifest): the whole path still comes out, from the manifest's top."""
    data = _two_vms()
    edit(data)
    assert (
        f"manifest.json: malformed manifest ({where}" in corrupt(json.dumps(data).encode()).message
    )


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        (
            {"vms": {"vm1": {"freeze_ack": {"realtime": "x", "monotonic": 1, "boottime": 1}}}},
            "extra.update.vms.vm1.freeze_ack.realtime: 'x' is not a time",
        ),
        (
            {"vms": {"vm1": {"freeze_ack": {"realtime": 1, "monotonic": 1}}}},
            "extra.update.vms.vm1.freeze_ack.boottime: missing",
        ),
        ({"vms": {"vm1": {"freeze_ack": 5}}}, "extra.update.vms.vm1.freeze_ack: expected an"),
        ({"events": {"kernel_boot": []}}, "extra.update.events.kernel_boot: expected an object"),
        ({"request": {"deadlines": {"freezing": 0}}}, "extra.update.request.deadlines.freezing"),
        ({"phases": [{}, 3]}, "extra.update.phases[1]: expected an object"),
    ],
    ids=["stamp-str", "stamp-missing", "stamp-int", "event-list", "deadline-0", "phase-int"],
)
def test_a_bad_carried_update_names_the_whole_path(changes: dict[str, Any], where: str) -> None:
    assert where in corrupt(json.dumps(carried(**changes)).encode()).message
