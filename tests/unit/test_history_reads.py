"""The REST API's history reads (luod.rest.history_reads): a page parses only its own lines,
cursors page through every entry once, a torn line costs an entry and shifts nothing, and the
metrics' facts are read again only when the file changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from luod.core import timeline
from luod.errors import LuodError
from luod.rest import history_reads


def _update(n: int, outcome: str = "completed") -> dict[str, Any]:
    at = 1_800_000_000.0 + n
    return {
        "id": f"u{n}",
        "request": {"kernel": "/boot/k" + "x" * 4000, "uid": 0},
        "phases": [
            {"from": "idle", "to": "preparing", "reason": "", "at": {"realtime": at}},
            {"from": "preparing", "to": "idle", "reason": "", "at": {"realtime": at + 2.5}},
        ],
        "outcome": outcome,
        "reason": "" if outcome == "completed" else "deadline: freezing",
        "blackout": {"vm1": 0.25},
        "finished": at + 3,
    }


def _qualification(n: int) -> dict[str, Any]:
    return {"kind": "qualification", "id": f"q{n}", "outcome": "passed", "reason": "",
            "request": {"chain": [], "options": {"large_mib": 1, "many_files": 1, "sessions": 0},
                        "with_vms": False, "uid": 0},
            "chain": [], "steps": [],
            "started": 1.0, "finished": 2.0}  # fmt: skip


def _write(state: Path, entries: list[dict[str, Any] | str]) -> None:
    lines = [e if isinstance(e, str) else json.dumps(e) for e in entries]
    (state / timeline.HISTORY).write_text("".join(line + "\n" for line in lines))


def test_a_page_parses_only_its_own_lines(tmp_path: Path, parsed: list[bytes]) -> None:
    _write(tmp_path, [_update(n) for n in range(1000)])
    first = history_reads.page(tmp_path, "update", None, 3)
    assert [r.id for r in first.history] == ["u999", "u998", "u997"]
    assert len(parsed) == 3 and first.next_cursor is not None


def test_cursors_page_through_every_entry_of_a_kind_once(tmp_path: Path) -> None:
    entries: list[dict[str, Any] | str] = []
    for n in range(7):
        entries += [_update(n), _qualification(n)]
    _write(tmp_path, entries)
    seen, cursor = [], None
    while True:
        page = history_reads.page(tmp_path, "update", cursor, 3)
        seen += [r.id for r in page.history]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == [f"u{n}" for n in reversed(range(7))]
    both = history_reads.page(tmp_path, "all", None, 2).history
    assert [(r.kind, r.id) for r in both] == [("qualification", "q6"), ("update", "u6")]
    assert [r.id for r in history_reads.page(tmp_path, "qualification", None, 50).history] == [
        f"q{n}" for n in reversed(range(7))
    ]


def test_a_torn_line_is_skipped_and_shifts_no_cursor(tmp_path: Path) -> None:
    _write(tmp_path, [_update(0), _update(1), '{"id": "torn', _update(3)])
    first = history_reads.page(tmp_path, "update", None, 2)
    assert [r.id for r in first.history] == ["u3", "u1"]
    second = history_reads.page(tmp_path, "update", first.next_cursor, 2)
    assert [r.id for r in second.history] == ["u0"] and second.next_cursor is None


def test_a_cursor_luod_did_not_hand_out_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, [_update(0)])
    with pytest.raises(LuodError) as refused:
        history_reads.page(tmp_path, "update", "aDk5OQ", 2)  # "h999": past the end
    assert refused.value.code == "bad-cursor"


def test_no_history_is_an_empty_page(tmp_path: Path) -> None:
    page = history_reads.page(tmp_path, "all", None, 50)
    assert page.history == [] and page.next_cursor is None


def test_the_metrics_facts_follow_the_file_and_are_kept_while_it_is_unchanged(
    tmp_path: Path,
) -> None:
    ended = history_reads.EndedUpdates(tmp_path)
    assert ended.read() == []
    _write(tmp_path, [_update(0), _qualification(0), _update(1, "aborted")])
    facts = ended.read()
    assert [f.outcome for f in facts] == ["aborted", "completed"]  # newest first, no qualification
    assert facts[0].reason_code == "deadline" and facts[1].reason_code == "none"
    assert facts[1].phase_seconds == (("preparing", 2.5),)
    assert facts[1].blackout_seconds == {"vm1": 0.25}
    assert ended.read() is facts  # unchanged file: not parsed again
    with (tmp_path / timeline.HISTORY).open("a") as history:
        history.write(json.dumps(_update(2)) + "\n")
    assert [f.outcome for f in ended.read()] == ["completed", "aborted", "completed"]
