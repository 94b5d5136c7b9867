"""Pages of LIST and HISTORY at the frame's limit, and history rotation (issue 13, finding 11)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from luod.core import statedir, timeline
from luod.errors import LuodError
from luod.vmm import codec, fields, paging, parse


def item(size: int, name: str = "a") -> dict[str, str]:
    """An item whose compact JSON plus its comma takes ``size`` bytes."""
    overhead = len(json.dumps({"id": name, "pad": ""}, separators=(",", ":"))) + 1
    return {"id": name, "pad": "x" * (size - overhead)}


def test_items_of_exactly_a_page_come_in_one_page() -> None:
    half = paging.PAGE_BYTES // 2
    items = [item(half, "a"), item(paging.PAGE_BYTES - half, "b")]
    assert paging.page(items, None, lambda i: i["id"]) == (items, None)


def test_one_byte_more_makes_a_second_page() -> None:
    half = paging.PAGE_BYTES // 2
    items = [item(half, "a"), item(paging.PAGE_BYTES - half + 1, "b")]
    assert paging.page(items, None, lambda i: i["id"]) == (items[:1], "a")


def test_one_item_larger_than_a_page_is_reply_too_large() -> None:
    assert paging.page([item(paging.PAGE_BYTES)], None, lambda i: i["id"])[1] is None
    with pytest.raises(LuodError) as info:
        paging.page([item(paging.PAGE_BYTES + 1)], None, lambda i: i["id"])
    assert info.value.code == "reply-too-large"
    # no 'limit' helps here (an update record of 1000 VMs is ~400 KB): the hint says where to go
    assert "no 'limit' makes it fit" in info.value.hint and "REST" in info.value.hint


def test_the_limit_cuts_a_page() -> None:
    items = [item(10, str(n)) for n in range(5)]
    assert paging.page(items, 2, lambda i: i["id"]) == (items[:2], "1")
    assert paging.page(items, 5, lambda i: i["id"]) == (items, None)


@pytest.mark.parametrize(
    ("limit", "ok"),
    [
        (1, True),
        (fields.MAX_PAGE, True),
        (0, False),
        (fields.MAX_PAGE + 1, False),
        (True, False),
        ("5", False),
    ],
)
def test_limit_is_checked(limit: object, ok: bool) -> None:
    frame = codec.Frame(json.dumps({"cmd": "LIST", "limit": limit}).encode())
    if ok:
        assert isinstance(limit, int)
        assert parse.decode_request(frame) == codec.ListVms(None, None, limit, None)
    else:
        with pytest.raises(LuodError):
            parse.decode_request(frame)


def test_history_keeps_its_newest_records(tmp_path: Path) -> None:
    (tmp_path / timeline.HISTORY).write_text("")
    os.chmod(tmp_path / timeline.HISTORY, 0o640)
    for n in range(5):
        timeline.append_history(tmp_path, timeline.UpdateRecord(id=f"u{n}"), keep=3)
        kept = [r["id"] for r in timeline.read_history(tmp_path)]
        assert kept == [f"u{m}" for m in range(max(0, n - 2), n + 1)]  # at the limit, then over
    assert (tmp_path / timeline.HISTORY).stat().st_mode & 0o777 == statedir.FILE_MODE  # 0600
    assert [p.name for p in tmp_path.iterdir()] == [timeline.HISTORY]  # no temp file left
