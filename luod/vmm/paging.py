"""LIST and HISTORY answer in pages that each fit one frame (issue 13, finding 11): pure."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from luod.vmm.codec import MAX_LINE, ReplyTooLarge

PAGE_BYTES: Final = MAX_LINE - 4096
"""What the items of one LIST or HISTORY page may take in a frame: the rest is the envelope."""
ONE_RECORD_HINT: Final = (
    "this one record is larger than a frame (as an update's record is from about 150 VMs on): "
    "no 'limit' makes it fit; the REST API serves it whole (luoctl vms, luoctl history)"
)


def page(
    items: list[dict[str, Any]], limit: int | None, cursor: Callable[[dict[str, Any]], str]
) -> tuple[list[dict[str, Any]], str | None]:
    """The first items that fit one frame (and ``limit``), and the cursor of the next page
    (None on the last)."""
    taken: list[dict[str, Any]] = []
    size = 0
    for item in items[: limit or len(items)]:
        size += len(json.dumps(item, separators=(",", ":"))) + 1
        if size > PAGE_BYTES:
            if not taken:
                raise ReplyTooLarge(size, ONE_RECORD_HINT)
            break
        taken.append(item)
    more = len(taken) < len(items)
    return taken, cursor(taken[-1]) if more and taken else None
