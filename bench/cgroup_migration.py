"""A cgroup migration after a quiet spell, with cgroup v2's ``favordynmods`` off and on, side by
side in one guest (run by bench/vm_targets.py's last boot, on the real kernel).

After a kexec, luod's kept retrieve helper enters each VMM's cgroup for its RECLAIM
(docs/kernel.md §6.4). Writing to ``cgroup.procs`` takes the kernel's threadgroup rwsem for
writing; without ``favordynmods`` that waits for an RCU grace period unless another migration
came just before, so a RECLAIM that comes alone pays one. The guest boots without it; the plain
migrations come first, then a remount (keeping the mount's other options) turns it on. Not
ABBA: once on, 7.2.13 kept migrations fast after a remount that turned it off again (measured:
0.3 ms against 6.5-9.9 ms before it was ever on), so a second plain round would measure the
favored path.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Final

from bench.stats import human, median, table
from luod.kernel.charged import CGROUP_ROOT, cgroup2_options, cgroup_of, procs_of

MS_REMOUNT: Final = 32
SAMPLES: Final = 12
QUIET: Final = 0.1  # seconds between migrations: longer than a grace period
MODES: Final = ("plain", "favordynmods")


def super_options() -> list[str]:
    """The cgroup v2 mount's own options at CGROUP_ROOT, but rw/ro (a remount's data)."""
    return [o for o in cgroup2_options() or [] if o not in ("rw", "ro")]


def remount_options(options: list[str], favored: bool) -> str:
    """cgroup v2 takes every flag from the remount's options: the others are kept by naming
    them again."""
    wanted = [o for o in options if o != "favordynmods"] + (["favordynmods"] if favored else [])
    return ",".join(wanted)


def remount(options: list[str], favored: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    data = remount_options(options, favored).encode()
    if libc.mount(None, str(CGROUP_ROOT).encode(), None, MS_REMOUNT, data or None) != 0:
        raise OSError(ctypes.get_errno(), f"remount {CGROUP_ROOT} with {data.decode()!r}")


def migrate(procs: Path) -> float:
    fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    try:
        started = time.perf_counter()
        os.write(fd, b"0")
        return time.perf_counter() - started
    finally:
        os.close(fd)


def measure() -> dict[str, list[float]]:
    """In the guest, as root: seconds per migration after QUIET, plain then favored (plain
    stays empty when the guest booted favoring migrations)."""
    original = super_options()
    home = procs_of(cgroup_of(os.getpid()) or "/")
    targets = [CGROUP_ROOT / f"bench-migrate-{n}" for n in (1, 2)]
    for target in targets:
        target.mkdir(exist_ok=True)
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for mode in MODES:
            if mode == "plain" and "favordynmods" in original:
                continue
            remount(original, mode == "favordynmods")
            for n in range(SAMPLES):
                time.sleep(QUIET)
                samples[mode].append(migrate(targets[n % 2] / "cgroup.procs"))
    finally:
        migrate(home)
        remount(original, "favordynmods" in original)
        for target in targets:
            target.rmdir()
    return samples


def text(samples: dict[str, list[float]]) -> str:
    title = (
        f"a cgroup migration {QUIET * 1e3:.0f} ms after the last one (what a RECLAIM from a "
        "VMM's own cgroup costs luod's retrieve helper; real kernel, same guest)\n"
    )
    if not samples["plain"]:
        return title + "not measured: the guest booted with favordynmods"
    rows = [
        [mode, human(median(samples[mode])), human(min(samples[mode])), str(len(samples[mode]))]
        for mode in MODES
    ]
    plain, favored = (median(samples[mode]) for mode in MODES)
    return (
        title
        + table(["cgroup v2 mount", "median", "min", "migrations"], rows)
        + f"\nfavordynmods / plain: {favored / plain:.3f} (docs/operations.md §8.1 "
        "cgroup-migrations: cgroup_favordynmods=true on the kernel's command line)"
    )
