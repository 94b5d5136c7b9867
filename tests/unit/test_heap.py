"""luod gives freed heap back when a VMM hangs up and when an update ends, at most once per
INTERVAL (luod.daemon.heap): its RSS had stayed at the fuzz's high-water mark (issue 13)."""

from __future__ import annotations

import time

import pytest

from luod.daemon import heap
from tests.unit.test_luoctl import Host


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def malloc_trim(pad: int) -> int:
        calls.append(pad)
        return 1  # "some memory was released"

    monkeypatch.setattr(heap, "_resolved", True)
    monkeypatch.setattr(heap, "_trim", malloc_trim)
    monkeypatch.setattr(heap, "_last", float("-inf"))
    return calls


def test_at_most_once_per_interval(trims: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # the clock heap reads
    assert heap.give_back() and not heap.give_back()
    now[0] += heap.INTERVAL
    assert heap.give_back()
    assert trims == [0, 0]


def test_nothing_where_there_is_no_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_resolved", True)
    monkeypatch.setattr(heap, "_trim", None)
    assert heap.give_back() is False


def test_glibc_has_it() -> None:
    assert heap._malloc_trim() is not None  # the hosts luod runs on (Debian): glibc


@pytest.mark.anyio
async def test_a_vmm_hanging_up_and_an_update_ending_give_heap_back(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def give_back() -> bool:
        calls.append("trim")
        return True

    monkeypatch.setattr(heap, "give_back", give_back)
    host.luod.handler.disconnected(await host.luod.handover_vm("vm2", size=8192))
    assert calls == ["trim"]
    refused = await host.luoctl("update", "start", "--kernel", "/none", "--reuse-cmdline")
    assert refused.code == 3 and calls == ["trim", "trim"]  # the refused update ended
