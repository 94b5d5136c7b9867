"""HISTORY and the update preflight parse only the history lines they need (issue 13: luod
parsed every record, up to 1,000 of ~12 KB, for each UPDATE and HISTORY, and grew by tens of
MB under the socket fuzz)."""

from __future__ import annotations

import json
from pathlib import Path

from luod.core import timeline
from luod.daemon import handler
from luod.vmm import paging


def _write(state: Path, count: int, size: int) -> None:
    lines = [
        json.dumps({"id": f"u{n:04}", "outcome": "refused", "kernel": "k" * size}, sort_keys=True)
        for n in range(count)
    ]
    lines.insert(5, json.dumps({"kind": "qualification", "id": "q1", "outcome": "passed"}))
    lines.insert(7, '{"id": "torn')
    (state / timeline.HISTORY).write_text("\n".join(lines) + "\n")


def test_a_page_parses_only_the_records_it_can_hold(tmp_path: Path, parsed: list[bytes]) -> None:
    _write(tmp_path, 1000, 12_000)
    with timeline.history(tmp_path, kind="update") as lines:
        assert len(lines) == 1001  # the qualification left out unparsed, the torn line kept
        taken = handler._enough(lines, None)
    page, following = paging.page(taken, None, lambda r: str(r.get("id")))
    assert [r["id"] for r in page] == ["u0000", "u0001", "u0002", "u0003", "u0004"]
    assert following == "u0004"
    assert len(parsed) <= 8  # not the 1,001 lines: the page, the torn line, one more


def test_paging_with_the_cursor_reaches_every_update_once(tmp_path: Path) -> None:
    _write(tmp_path, 40, 5_000)
    ids: list[str] = []
    after: str | None = None
    while True:
        with timeline.history(tmp_path, kind="update") as lines:
            rest = lines[handler._after(lines, after) :] if after else lines
            taken = handler._enough(rest, 7)
        page, after = paging.page(taken, 7, lambda r: str(r.get("id")))
        ids += [r["id"] for r in page]
        if after is None:
            break
    assert ids == [f"u{n:04}" for n in range(40)]


def test_the_cursor_parses_only_the_lines_that_name_it(tmp_path: Path, parsed: list[bytes]) -> None:
    _write(tmp_path, 1000, 1_000)
    with timeline.history(tmp_path, kind="update") as lines:
        assert handler._after(lines, "u0998") == 999 + 1  # the torn line is among the lines
    assert len(parsed) == 1


def test_qualifications_are_read_without_parsing_the_updates(
    tmp_path: Path, parsed: list[bytes]
) -> None:
    _write(tmp_path, 1000, 1_000)
    assert [r["id"] for r in timeline.read_history(tmp_path, kind="qualification")] == ["q1"]
    assert len(parsed) == 1
    every = timeline.read_history(tmp_path)
    assert len(every) == 1001 and every[5]["kind"] == "qualification"  # the torn line skipped


def test_qualification_lines_first_last_and_without_a_final_newline(tmp_path: Path) -> None:
    first = json.dumps({"kind": "qualification", "id": "q0"}, sort_keys=True)
    last = json.dumps({"kind": "qualification", "id": "q9"}, sort_keys=True)
    update = json.dumps({"id": "u1", "reason": '"kind": "qualification"'}, sort_keys=True)
    (tmp_path / timeline.HISTORY).write_text(f"{first}\n{update}\n{last}")  # a torn end
    found = timeline.read_history(tmp_path, kind="qualification")
    assert [r["id"] for r in found] == ["q0", "q9"]  # the update's quoted text is escaped
    assert [r["id"] for r in timeline.read_history(tmp_path, kind="update")] == ["u1"]


def test_rotation_keeps_the_newest_lines_byte_for_byte(tmp_path: Path) -> None:
    for n in range(7):
        timeline.append_entry(tmp_path, {"id": f"u{n}", "text": "é" * n}, keep=4)
    kept = (tmp_path / timeline.HISTORY).read_bytes().splitlines()
    assert [json.loads(line)["id"] for line in kept] == ["u3", "u4", "u5", "u6"]
