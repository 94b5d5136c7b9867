"""bench.handover's preserve cases: a case may write another memfd right before each sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import handover
from luod.kernel import OwnedFd


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every memfd the bench fills, in order."""
    sizes: list[int] = []
    fill = handover.filled

    def recorded(size: int) -> OwnedFd:
        sizes.append(size)
        return fill(size)

    monkeypatch.setattr(handover, "filled", recorded)
    return sizes


def test_a_case_writes_another_memfd_after_the_file_before_each_sample(
    tmp_path: Path, written: list[int]
) -> None:
    case = {"after": (4096, 3, 1 << 20)}
    raws, vias = handover.preserve_samples(tmp_path, case, extra=("--no-api",))["after"]

    assert len(raws) == len(vias) == 3
    assert written == [4096, 1 << 20] * 6  # raw side, then luod's: the file, then the write


def test_a_case_without_a_write_fills_only_its_file(tmp_path: Path, written: list[int]) -> None:
    handover.preserve_samples(tmp_path, {"plain": (4096, 2)}, extra=("--no-api",))

    assert written == [4096] * 4
