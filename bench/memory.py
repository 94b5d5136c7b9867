"""luod's resident memory (simulator, this host), beside a bare interpreter's in the same run.

- idle: luod serving, no VM, with and without the REST API. The API is served by luod's REST
  worker, a child process (luod.rest.worker): luod's own RSS is the target's measure; the
  worker's RSS and the PSS of the pair (shared pages counted once) say what the host pays;
- 1000 VMs: one 4 KiB memfd preserved for each (luod holds a session fd per VM);
- growth: 100 consecutive simulated updates (one VM handed over, kexec, the new luod takes
  it back, DONE), the RSS of each boot's luod once the VM is done; the fitted slope says
  whether anything accumulates (history, manifest, caches) from one update to the next.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from bench.handover import wait_for_socket
from bench.stats import table
from luod.errors import LuodError
from luod.kernel import memfd
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE

REPO = Path(__file__).resolve().parents[1]
MB = 1e6
VMS = 1000
UPDATES = 100
TARGETS = {"idle": 40 * MB, "vms": 100 * MB}


def rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def luod(state: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "luod", "--simulate", str(state), *extra],
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        wait_for_socket(state / "run" / "liveupdate.sock")
        if "--no-api" not in extra:
            wait_for_socket(state / "run" / "api.sock")
        yield process, state / "run" / "liveupdate.sock"
    finally:
        process.terminate()
        process.wait(30)


def bare_python() -> float:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.5)
        return rss(process.pid)
    finally:
        process.kill()
        process.wait()


def pss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return float(line.split()[1]) * 1024
    raise LookupError(f"no Pss for {pid}")


def idle(workdir: Path, *extra: str) -> float:
    with luod(workdir, *extra) as (process, _):
        time.sleep(0.5)
        return rss(process.pid)


def idle_with_worker(workdir: Path) -> tuple[float, float, float]:
    """luod's RSS with the REST API serving; its worker's RSS; the PSS of the two."""
    with luod(workdir) as (process, _):
        time.sleep(0.5)
        [worker] = [
            child
            for child in psutil.Process(process.pid).children()
            if "luod.rest.worker" in child.cmdline()
        ]
        return rss(process.pid), rss(worker.pid), pss(process.pid) + pss(worker.pid)


def with_vms(workdir: Path) -> float:
    with luod(workdir, "--no-api") as (process, socket), Client(socket) as vmm:
        for index in range(VMS):
            vmm.register(f"vm{index}")
            with memfd.create("ram", 4096) as fd:
                vmm.preserve(f"vm{index}", {"ram0": fd})
        return rss(process.pid)


def growth(workdir: Path, updates: int = UPDATES) -> list[float]:
    """The RSS of each boot's luod after it took the VM back, over ``updates`` updates."""
    image = workdir / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    state, samples = workdir / "grow", []
    for cycle in range(updates + 1):
        with luod(state, "--no-api") as (process, socket):
            with Client(socket) as vmm:
                if cycle:
                    for fd in vmm.reclaim(f"vm{cycle - 1}").values():
                        fd.close()
                    vmm.done(f"vm{cycle - 1}")
                    samples.append(rss(process.pid))
                if len(samples) == updates:
                    break
                vmm.register(f"vm{cycle}")
                with memfd.create("ram", 4096) as fd:
                    vmm.preserve(f"vm{cycle}", {"ram0": fd})
            with Client(socket) as operator, contextlib.suppress(LuodError, OSError):
                operator.update(image, wait=True)
            process.wait(30)
        (state / "run" / "liveupdate.sock").unlink(missing_ok=True)
    return samples


def slope(samples: list[float]) -> float:
    """Least-squares bytes per update."""
    xs = list(range(len(samples)))
    fit = statistics.linear_regression(xs, samples)
    return fit.slope


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


def report() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        python = bare_python()
        no_api = idle(workdir / "idle-a", "--no-api")
        api, worker, pair = idle_with_worker(workdir / "idle-b")
        vms = with_vms(workdir / "vms")
        grown = growth(workdir)
    per_update = slope(grown)
    rows = [
        ["python3 (bare, sleeping)", f"{python / MB:.1f} MB", "1.00", "-", ""],
        ["luod idle, no REST", f"{no_api / MB:.1f} MB", f"{no_api / python:.2f}", "-", ""],
        [
            "luod idle, REST serving (its worker apart)",
            f"{api / MB:.1f} MB",
            f"{api / python:.2f}",
            "<= 40 MB",
            verdict(api, TARGETS["idle"]),
        ],
        ["its REST worker (luod.rest.worker)", f"{worker / MB:.1f} MB", "-", "-", ""],
        ["luod + REST worker, PSS", f"{pair / MB:.1f} MB", "-", "-", "what the host pays"],
        [
            f"luod with {VMS} VMs (no REST)",
            f"{vms / MB:.1f} MB",
            f"{vms / python:.2f}",
            "<= 100 MB",
            verdict(vms, TARGETS["vms"]),
        ],
        [
            f"growth over {len(grown)} updates (slope)",
            f"{per_update / 1e3:+.1f} kB/update",
            f"{grown[0] / MB:.1f} -> {grown[-1] / MB:.1f} MB",
            "no growth (< 10 kB/update)",
            verdict(per_update, 10e3),
        ],
    ]
    header = ["luod RSS (simulator, host)", "measure", "/ bare python3", "target", ""]
    return "luod's memory\n" + table(header, rows)


if __name__ == "__main__":
    print(report())
