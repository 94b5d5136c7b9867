"""The benches' plots: matplotlib on its file-only backend, each figure saved as SVG and PNG in
build/bench/ (matplotlib is imported only by a bench that plots)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUT = Path(__file__).resolve().parents[1] / "build" / "bench"


def pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save(figure: Figure, name: str) -> list[Path]:
    """``figure`` as build/bench/NAME.svg and .png, then closed."""
    OUT.mkdir(parents=True, exist_ok=True)
    paths = [OUT / f"{name}.svg", OUT / f"{name}.png"]
    for path in paths:
        figure.savefig(path)
    pyplot().close(figure)
    return paths
