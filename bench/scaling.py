"""How luod's own cost grows with the number of VMs (simulator, this host): 1 to 1000 VMs.

Per count: luod's exec -> serving after a simulated kexec with that many sessions to take back,
RECLAIM + DONE of all of them by one client, and luod's RSS holding them before the kexec.
Each curve gets a linear fit (its slope: the cost per VM) and its growth exponent over the top
decade (100 -> 1000 VMs; 1.0 is linear); an exponent above SUPERLINEAR is flagged. Plots
(SVG, PNG) in build/bench/.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import plots
from bench.handover import daemon, reclaim_every, spawn_simulated, wait_for_socket
from bench.memory import rss
from bench.stats import human, table
from luod.errors import LuodError
from luod.kernel import memfd
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE

REPO = Path(__file__).resolve().parents[1]
COUNTS = (1, 10, 100, 1000)
SUPERLINEAR = 1.15


def one(workdir: Path, count: int) -> dict[str, float]:
    image = workdir / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    state = workdir / f"n{count}"
    with daemon(state, "--no-api") as socket:
        with Client(socket) as vmm:
            for index in range(count):
                vmm.register(f"vm{index}")
                with memfd.create("ram", 4096) as fd:
                    vmm.preserve(f"vm{index}", {"ram0": fd})
        held = _luod_rss(state)
        with Client(socket) as operator, contextlib.suppress(LuodError, ConnectionError, OSError):
            operator.update(image, wait=True)
    socket = state / "run" / "liveupdate.sock"
    socket.unlink(missing_ok=True)
    started = time.perf_counter()
    process = spawn_simulated(state)
    try:
        wait_for_socket(socket)
        serving = time.perf_counter() - started
        reclaimed = reclaim_every(socket, count)
    finally:
        process.terminate()
        process.wait(30)
    return {"serving": serving, "reclaim": reclaimed, "rss": held}


def _luod_rss(state: Path) -> float:
    """The RSS of the luod serving ``state`` (found by its socket's owner: the one luod)."""
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if cmdline[1:3] == [b"-m", b"luod"] and str(state).encode() in cmdline:
                return rss(pid)
    return float("nan")


def per_vm(xs: list[float], ys: list[float]) -> float:
    """The marginal cost: the slope of y = a + b * VMs (least squares)."""
    return statistics.linear_regression(xs, ys).slope


def exponent(xs: list[float], ys: list[float]) -> float:
    """The growth exponent over the top decade (the last two counts), where the fixed costs
    (interpreter, imports) no longer hide it: 1.0 is linear."""
    return math.log(ys[-1] / ys[-2]) / math.log(xs[-1] / xs[-2])


def plot(results: dict[int, dict[str, float]]) -> list[Path]:
    pyplot = plots.pyplot()
    counts = list(results)
    figure, (times, memory) = pyplot.subplots(1, 2, figsize=(10, 4))
    for key, label in (("serving", "exec -> serving"), ("reclaim", "RECLAIM + DONE, all")):
        times.loglog(counts, [results[n][key] for n in counts], marker="o", label=label)
    times.set_xlabel("VMs")
    times.set_ylabel("seconds")
    times.legend()
    memory.semilogx(counts, [results[n]["rss"] / 1e6 for n in counts], marker="o")
    memory.set_xlabel("VMs")
    memory.set_ylabel("luod RSS (MB)")
    figure.suptitle("luod's cost against the number of VMs (simulator, this host)")
    return plots.save(figure, "scaling")


def report() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        results = {count: one(Path(tmp), count) for count in COUNTS}
    counts = [float(n) for n in results]
    rows = []
    for key, label in (
        ("serving", "exec -> serving"),
        ("reclaim", "RECLAIM + DONE of every VM"),
        ("rss", "RSS holding them"),
    ):
        values = [results[n][key] for n in results]
        shown = [f"{v / 1e6:.1f} MB" if key == "rss" else human(v) for v in values]
        slope = exponent(counts, values)
        marginal = per_vm(counts, values)
        unit = f"{marginal / 1e3:.1f} kB" if key == "rss" else human(marginal)
        flag = "worse than linear" if slope > SUPERLINEAR else "at most linear"
        rows.append([label, *shown, unit, f"{slope:.2f}", flag])
    header = ["luod's cost", *(f"{n} VMs" for n in results), "per VM (fit)", "exponent", ""]
    paths = plot(results)
    return (
        "Scaling with the number of VMs (simulator, this host)\n"
        + table(header, rows)
        + "\nplot: "
        + ", ".join(os.path.relpath(p, REPO) for p in paths)
    )


if __name__ == "__main__":
    print(report())
