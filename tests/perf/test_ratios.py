"""A cheap guard on luod's two hot numbers, as ratios measured side by side in this run
(bench/startup.py and bench/handover.py report them in full, with targets, in `make bench`).

Each bound is twice the ratio measured when it was set (host and simulator, minimum of the
samples, the least disturbed run): a change that doubles the cost fails here, while the load of a
shared CI machine, which slows both sides alike, does not.
"""

from __future__ import annotations

from pathlib import Path

from bench import handover, startup

IMPORT_MEASURED = 16.5
"""``import luod.main`` / ``python -S -c pass`` when set (host, 2 cores; 22.6 before
structlog's rich, psutil and luod.kernel's eager imports were cut)."""
PRESERVE_MEASURED = 17.0
"""luod's PRESERVE of one 4 KiB memfd / the raw PRESERVE_FD ioctl (simulator) when set."""


def test_import_costs_at_most_twice_what_it_did() -> None:
    sides = startup.import_sides(rounds=7)
    assert startup.ratio(sides) <= 2 * IMPORT_MEASURED, sides


def test_preserve_4k_costs_at_most_twice_what_it_did(tmp_path: Path) -> None:
    raws, vias = handover.preserve_samples(tmp_path, {"4 KiB": (4096, 60)})["4 KiB"]
    ratio = min(vias) / min(raws)
    assert ratio <= 2 * PRESERVE_MEASURED, (min(vias), min(raws))
