"""The history file is read in place (luod.core.timeline.history over statedir.mapped): a
HISTORY page, a REST page and the rotation copy out only the lines they take. Before, each read
the whole file (up to ~12 MB: HISTORY_KEEP records with long paths) onto the heap, on luod's
main loop for the socket's HISTORY (~50 ms at 12 MB) and at every update's end (rotation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from luod.core import statedir, timeline
from luod.daemon import handler
from luod.rest import history_reads

RECORDS, PATH_BYTES = 1000, 12_000  # a full history of requests with long paths: ~12 MB
HEAP_BOUND = 1 << 20  # a page's few lines and their parse, well under the file's size


@pytest.fixture
def full_history(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"id": f"u{n:04}", "request": {"kernel": "/p" * (PATH_BYTES // 2), "uid": 0}})
        for n in range(RECORDS)
    ]
    lines.insert(500, json.dumps({"kind": "qualification", "id": "q1"}, sort_keys=True))
    (tmp_path / timeline.HISTORY).write_text("\n".join(lines) + "\n")
    assert (tmp_path / timeline.HISTORY).stat().st_size > RECORDS * PATH_BYTES
    return tmp_path


def _peak_heap(state: Path, call: str) -> int:
    """The peak traced heap while ``call`` (one statement, with ``state``) runs, in a fresh
    interpreter: tracemalloc counts every thread's allocations, and other tests leave threads
    running in this process (a full-suite run once went over the bound that way)."""
    script = (
        "import tracemalloc\nfrom pathlib import Path\nfrom luod.core import timeline\n"
        "from luod.daemon import handler\nfrom luod.rest import history_reads\n"
        f"state = Path({str(state)!r})\ntracemalloc.start()\n{call}\n"
        "print(tracemalloc.get_traced_memory()[1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return int(done.stdout.split()[-1])


def test_a_socket_history_page_after_a_late_cursor_copies_only_its_lines(
    full_history: Path,
) -> None:
    with timeline.history(full_history, kind="update") as lines:
        rest = lines[handler._after(lines, "u0990") :]
        page = [r["id"] for r in handler._enough(rest, 5)]
    assert page == ["u0991", "u0992", "u0993", "u0994", "u0995", "u0996"]
    call = (
        'with timeline.history(state, kind="update") as lines: '
        'handler._enough(lines[handler._after(lines, "u0990") :], 5)'
    )
    assert _peak_heap(full_history, call) < HEAP_BOUND


def test_a_rest_history_page_copies_only_its_lines(full_history: Path) -> None:
    page = history_reads.page(full_history, "update", None, 3)
    assert [e.id for e in page.history] == ["u0999", "u0998", "u0997"]
    call = 'history_reads.page(state, "update", None, 3)'
    assert _peak_heap(full_history, call) < HEAP_BOUND


def test_the_rotation_cuts_the_file_without_reading_it_onto_the_heap(full_history: Path) -> None:
    path = full_history / timeline.HISTORY
    before = path.read_bytes()
    peak = _peak_heap(full_history, f"timeline._rotate(state / timeline.HISTORY, {RECORDS - 10})")
    kept = path.read_bytes()
    assert kept == before[before.index(b'{"id": "u0011"') :]  # byte for byte, the newest kept
    assert len(kept.splitlines()) == RECORDS - 10
    assert peak < HEAP_BOUND


def test_kinds_and_torn_lines_are_found_in_place(tmp_path: Path) -> None:
    update = json.dumps({"id": "u1", "reason": '"kind": "qualification"'}, sort_keys=True)
    qualification = json.dumps({"kind": "qualification", "id": "q1"}, sort_keys=True)
    (tmp_path / timeline.HISTORY).write_text(f"{update}\n\n{qualification}\n" + '{"id": "to')
    with timeline.history(tmp_path) as every:
        assert [every[i] for i in range(len(every))] == [
            update.encode(), b"", qualification.encode(), b'{"id": "to'
        ]  # fmt: skip
    with timeline.history(tmp_path, "update") as updates:
        assert len(updates) == 3 and updates[0] == update.encode()  # its quote is escaped
        assert updates.holds(0, b'"u1"') and not updates.holds(2, b'"u1"')
    with timeline.history(tmp_path, "qualification") as qualifications:
        assert list(qualifications) == [qualification.encode()]


def test_a_missing_or_empty_history_has_no_lines(tmp_path: Path) -> None:
    with timeline.history(tmp_path) as lines:
        assert len(lines) == 0
    (tmp_path / timeline.HISTORY).touch()
    with timeline.history(tmp_path, "update") as lines:
        assert list(lines) == []


def test_the_mapping_follows_no_symlink_and_maps_no_fifo(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text('{"id": "planted"}\n')
    (tmp_path / timeline.HISTORY).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError), timeline.history(tmp_path):
        pass
    os.unlink(tmp_path / timeline.HISTORY)
    os.mkfifo(tmp_path / timeline.HISTORY)
    with pytest.raises(OSError), statedir.mapped(tmp_path / timeline.HISTORY):
        pass
