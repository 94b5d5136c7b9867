"""``luoctl update watch``'s live board (luod.cli.live) on a host of many VMs: the table holds
what the terminal has rows for, the paused VMs first, and counts the rest; frames are drawn at
most FRAMES_PER_SECOND a second, however fast the events come (a 1000-row table took rich about
0.45 s to draw, and was drawn for each of an update's thousands of events)."""

from __future__ import annotations

import io

from rich.console import Console

from luod.cli.live import FRAMES_PER_SECOND, Board, Frames
from luod.cli.sse import Event

VMS = 1000


def board_of_many() -> Board:
    board = Board.of([{"id": f"vm{n:04}", "state": "preserved", "connected": True}
                      for n in range(VMS)])  # fmt: skip
    board.take(Event("PHASE", {"from": "idle", "to": "freezing",
                               "at": "2030-03-17T17:46:40Z"}), 100.0)  # fmt: skip
    for vm, at in (("vm0500", "2030-03-17T17:46:42Z"), ("vm0007", "2030-03-17T17:46:41Z")):
        board.take(Event("VM_PROGRESS", {"id": vm, "step": "freeze_ack", "at": at}), 102.0)
    board.take(Event("VM_PROGRESS", {"id": "vm0003", "step": "done",
                                     "at": "2030-03-17T17:46:43Z"}), 103.0)  # fmt: skip
    return board


def drawn(board: Board, rows: int | None) -> list[str]:
    console = Console(file=io.StringIO(), width=100, height=60, force_terminal=False)
    console.print(board.render(104.0, rows))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in str(text).splitlines()]


def test_a_board_of_1000_vms_shows_what_fits_with_the_paused_first() -> None:
    lines = drawn(board_of_many(), rows=10)
    table = lines[lines.index(next(line for line in lines if line.startswith("VM"))) + 1 :]
    assert len(table) == 10
    assert table[0].startswith("vm0007") and "paused" in table[0]  # paused longest: on top
    assert table[1].startswith("vm0500") and "paused" in table[1]
    assert all("preserved" in line for line in table[2:9])
    assert table[9].split() == ["…", "991", "more", "990", "preserved,", "1", "done"]


def test_without_a_limit_every_vm_has_its_row() -> None:
    lines = drawn(board_of_many(), rows=None)
    assert sum(line.startswith("vm") for line in lines) == VMS
    assert not any("more" in line for line in lines)


def test_a_board_that_fits_shows_no_more_line() -> None:
    board = Board.of([{"id": "vm1", "state": "preserved", "connected": True}])
    lines = drawn(board, rows=10)
    assert [line.split()[0] for line in lines if line.startswith("vm")] == ["vm1"]
    assert not any("more" in line for line in lines)


def test_frames_come_at_most_so_many_a_second() -> None:
    frames, gap = Frames(), 1.0 / FRAMES_PER_SECOND
    assert frames.due(10.0)
    assert not frames.due(10.0 + gap / 2)  # an event right after a frame: drawn with the next
    assert frames.due(10.0 + gap)
    assert [frames.due(10.0 + gap + k * 0.01) for k in range(1, 5)] == [False] * 4
