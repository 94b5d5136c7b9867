"""Baseline: median cost of each LUO operation through luod.kernel, on one backend.

Two phases around a kexec: ``before`` (create, preserve 4 KiB / 64 MiB) leaves sessions open
and the kexec carries them; ``after`` (retrieve session, retrieve 4 KiB / 64 MiB, finish).
Runs on the simulator in-process, and on the real kernel inside the VM (see bench/__main__.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench.stats import median, timed
from luod.kernel import Backend, kernel_backend, memfd

MIB = 1 << 20
ROUNDS = {"small": 100, "large": 4}
SIZES = {"small": 4096, "large": 64 * MIB}
T = TypeVar("T")
KEEP: list[Any] = []  # sessions that must stay open until the kexec


def before_kexec(backend: Backend) -> dict[str, float]:
    create = [timed(lambda: backend.device.create_session("bench-c").close()) for _ in range(50)]
    results = {"create_session": median(create)}
    for kind, size in SIZES.items():
        samples = []
        for index in range(ROUNDS[kind]):
            session = backend.device.create_session(f"bench-{kind}-{index}")
            with memfd.create("bench", size) as fd:
                _touch(fd.fileno(), size)
                samples.append(timed(partial(session.preserve, fd, 1)))
            KEEP.append(session)
        results[f"preserve_{kind}"] = median(samples)
    return results


def after_kexec(backend: Backend) -> dict[str, float]:
    results: dict[str, float] = {}
    retrieve_session: list[float] = []
    for kind in SIZES:
        retrieve, finish = [], []
        for index in range(ROUNDS[kind]):
            session, seconds = _timed_result(
                partial(backend.device.retrieve_session, f"bench-{kind}-{index}")
            )
            retrieve_session.append(seconds)
            fd, seconds = _timed_result(partial(session.retrieve, 1))
            retrieve.append(seconds)
            finish.append(timed(session.finish))
            session.close()
            fd.close()
        results["retrieve_session"] = median(retrieve_session)
        results[f"retrieve_{kind}"] = median(retrieve)
        results[f"finish_{kind}"] = median(finish)
    return results


def _timed_result(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter_ns()
    result = call()
    return result, (time.perf_counter_ns() - started) / 1e9


def _touch(fd: int, size: int) -> None:
    page = b"\xa5" * 4096
    for offset in range(0, size, 4096):
        os.pwrite(fd, page, offset)


def guest_main(phase: str, out: Path, next_kernel: Path | None) -> None:
    """Inside the VM: run one phase on the real kernel; before the kexec, kexec."""
    backend = kernel_backend()
    if phase == "before":
        results = before_kexec(backend)
        out.write_text(json.dumps(results))
        assert next_kernel is not None
        backend.load_kernel(next_kernel, cmdline=Path("/proc/cmdline").read_text().strip())
        os.sync()
        backend.reboot_kexec()
    else:
        out.write_text(json.dumps(after_kexec(backend)))


if __name__ == "__main__":
    guest_main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
