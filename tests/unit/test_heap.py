"""luod gives freed heap back when a VMM hangs up and when an update ends, at most once per
INTERVAL (luod.daemon.heap): its RSS had stayed at the fuzz's high-water mark (issue 13)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from luod.daemon import heap
from luod.kernel import libc
from tests.unit.test_luoctl import Host


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def trim() -> bool:
        calls.append("trim")
        return True

    monkeypatch.setattr(heap, "trim", trim)
    monkeypatch.setattr(heap, "_last", float("-inf"))
    return calls


def test_at_most_once_per_interval(trims: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # the clock heap reads
    assert heap.give_back() and not heap.give_back()
    now[0] += heap.INTERVAL
    assert heap.give_back()
    assert trims == ["trim", "trim"]


def test_nothing_where_there_is_no_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "trim", lambda: None)
    monkeypatch.setattr(heap, "_last", float("-inf"))
    assert heap.give_back() is False


def test_glibc_has_it_through_the_kernel_layers_libc() -> None:
    assert libc.malloc_trim() is not None  # the hosts luod runs on (Debian): glibc
    assert heap.trim is libc.malloc_trim


def test_no_ctypes_at_a_hang_up() -> None:
    """ctypes, imported at the first hang-up, cost ~2 ms of the event loop and opened its
    files for a moment (a CI run's fd check caught one)."""
    probe = (
        "import sys; from luod.daemon import heap; heap.give_back(); print('ctypes' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


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
