"""How luod's own cost grows with the guest's memory size, on the real kernel (issue 17, §3).

One run of the bare 7.2.13 guest (tests/vm/qemu.py, QEMU TCG, GUEST_MEMORY of RAM), one
real kexec. Every file is a memfd whose every page is written (bench.handover.filled), as a
VM's RAM in use.

- Boot 1, per size in PRESERVE_MIB, ROUNDS times in turns: the raw PRESERVE_FD of the memfd in a
  session of this process (then closed: unpreserved), and a PRESERVE of the same memfd through
  luod (a VM registered, then DROPped), with luod's RSS while it holds it. luod's own time is
  the difference. Then one VM per size in RECLAIM_MIB is handed over to luod, and the same
  sizes are preserved in sessions this process keeps open; luod's KEXEC carries both.
- Boot 2: this process retrieves its sessions and times RETRIEVE_FD of each memfd (the kernel's
  part of a RECLAIM: luod took the sessions back at its start), then starts luod and times a
  RECLAIM of each VM, with luod's RSS after each.

Each curve of luod's own time and RSS gets a linear fit (its cost per GiB) and its growth
exponent over the two largest sizes (1.0 is linear); above bench.scaling.SUPERLINEAR it is
flagged. Plot: build/bench/guest_memory.svg and .png, the samples in guest_memory.json.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import handover, plots, vm_targets
from bench.memory import rss
from bench.scaling import SUPERLINEAR
from bench.stats import human, median, signed, table, timed
from luod.kernel import Backend, OwnedFd, Session, kernel_backend
from luod.vmm.client import Client

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
PRESERVE_MIB = (64, 256, 1024, 4096)
ROUNDS = 5
RECLAIM_MIB = {64: 3, 256: 3, 1024: 1}  # VMs per size, held twice across the kexec (3.9 GiB)
SETTLE = 3.0  # seconds after luod serves, before the RECLAIMs
WARM_MIB = 4  # one PRESERVE and one RECLAIM first, not measured: luod's first use of a path
GUEST_MEMORY = "6G"


# --- in the guest ----------------------------------------------------------------------------
def _share() -> Path:
    return Path(os.environ["LUOD_VM_SHARE"])


def _state() -> Path:
    return vm_targets.STATE


def _started_luod() -> tuple[Any, Path]:
    from bench.vm_targets import spawn_luod  # the guest's luod: custody in memory, the booted image

    state = _state()
    state.mkdir(parents=True, exist_ok=True)
    process = spawn_luod(state, "", "--no-api")
    socket = state.parent / "run" / "liveupdate.sock"
    handover.wait_for_socket(socket, 300)
    return process, socket


def preserve_sweep(client: Client, luod_pid: int) -> dict[str, Any]:
    """Raw and through luod in turns, the order swapped every round (the second preserve of a
    memfd finds its pages as the first left them)."""
    backend = kernel_backend()
    _warm_preserve(client)
    results: dict[str, Any] = {}
    for mib in PRESERVE_MIB:
        raw: list[float] = []
        through: list[float] = []
        held: list[float] = []
        with handover.filled(mib * MIB) as fd:
            sides = [_raw_side(backend, fd, raw), _luod_side(client, fd, through, luod_pid, held)]
            for round_ in range(ROUNDS):
                for side in sides if round_ % 2 == 0 else reversed(sides):
                    side(f"bench-{mib}-{round_}")
        results[str(mib)] = {"raw": raw, "luod": through, "rss": held}
    return results


Side = Callable[[str], None]


def _raw_side(backend: Backend, fd: OwnedFd, samples: list[float]) -> Side:
    def side(name: str) -> None:
        session = backend.device.create_session(name)
        samples.append(timed(lambda: session.preserve(fd, 0)))
        session.close()  # unpreserved: the same memfd can be preserved again

    return side


def _luod_side(
    client: Client, fd: OwnedFd, samples: list[float], luod_pid: int, held: list[float]
) -> Side:
    def side(name: str) -> None:
        client.register(name)
        samples.append(timed(lambda: client.preserve(name, {"ram0": fd})))
        held.append(rss(luod_pid))  # while luod holds the file
        client.drop(name)

    return side


def _warm_preserve(client: Client) -> None:
    with handover.filled(WARM_MIB * MIB) as fd:
        client.register("bench-warm")
        client.preserve("bench-warm", {"ram0": fd})
        client.drop("bench-warm")


def hand_over(client: Client) -> list[Session]:
    """The VMs of RECLAIM_MIB to luod (and a small one to warm its RECLAIM up), and the same
    sizes in sessions this process keeps open: the kexec carries them, for boot 2's raw
    RETRIEVE_FD."""
    backend = kernel_backend()
    kept = []
    with handover.filled(WARM_MIB * MIB) as fd:
        client.register("warm")
        client.preserve("warm", {"ram0": fd})
    for name, mib in _reclaimed():
        with handover.filled(mib * MIB) as fd:
            session = backend.device.create_session(f"bench-raw-{name}")
            session.preserve(fd, 0)
            kept.append(session)
        with handover.filled(mib * MIB) as fd:
            client.register(name)
            client.preserve(name, {"ram0": fd})
    return kept


def _reclaimed() -> list[tuple[str, int]]:
    return [(f"r{mib}-{n}", mib) for mib, count in RECLAIM_MIB.items() for n in range(count)]


def guest_first() -> None:
    luod, socket = _started_luod()
    with Client(socket) as client:
        preserved = preserve_sweep(client, luod.pid)
        kept = hand_over(client)
    (_share() / "preserve.json").write_text(json.dumps(preserved))
    os.sync()
    with Client(socket) as operator:
        operator.kexec(os.environ["NEXT_KERNEL"])
    del kept  # not reached: the kexec takes the sessions across
    raise RuntimeError("KEXEC returned")


def raw_retrieves() -> dict[str, float]:
    backend = kernel_backend()
    times = {}
    with backend.device.open() as device:  # closed before luod opens it (exclusive open)
        for name, _ in _reclaimed():
            session = device.retrieve_session(f"bench-raw-{name}")
            started = time.perf_counter()
            fd = session.retrieve(0)
            times[name] = time.perf_counter() - started
            fd.close()
            session.finish()
            session.close()
    return times


def guest_after() -> None:
    raw = raw_retrieves()
    luod, socket = _started_luod()
    time.sleep(SETTLE)  # past the tasks luod starts a second after a kexec (uplink watch)
    samples: dict[str, dict[str, list[float]]] = {}
    with Client(socket) as vmm:
        _take(vmm, "warm")
        for name, mib in _reclaimed():
            took = _take(vmm, name)
            sample = samples.setdefault(str(mib), {"raw": [], "luod": [], "rss": []})
            sample["raw"].append(raw[name])
            sample["luod"].append(took)
            sample["rss"].append(rss(luod.pid))
    (_share() / "reclaim.json").write_text(json.dumps(samples))
    luod.terminate()
    luod.wait(60)


def _take(vmm: Client, name: str) -> float:
    started = time.perf_counter()
    fds = vmm.reclaim(name)
    took = time.perf_counter() - started
    for fd in fds.values():
        fd.close()
    vmm.done(name)
    return took


# --- on the host -----------------------------------------------------------------------------
def run_vm(workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench.startup import byte_compile
    from tests.vm.qemu import resolve_kernel, run_guest

    byte_compile()  # the guest reads the host's tree read-only: compiled here, once
    kernel = resolve_kernel()
    stages = [
        f"cd {REPO} && exec {sys.executable} -m bench.guest_memory {s}" for s in ("first", "after")
    ]
    result = run_guest(
        stages,
        kernel=kernel,
        timeout=1200,
        memory=GUEST_MEMORY,
        workdir=workdir,
        env={"NEXT_KERNEL": str(kernel)},
        log_port=True,  # luod logs as to a host's journal (tests/vm/log_port.py)
    ).check()
    share = result.share
    return json.loads((share / "preserve.json").read_text()), json.loads(
        (share / "reclaim.json").read_text()
    )


def curves(preserved: dict[str, Any], reclaimed: dict[str, Any]) -> dict[str, dict[int, float]]:
    """Per step and measure ("preserve raw", "reclaim own", ...), by size in MiB: the medians
    (seconds, or bytes for RSS); "own" is through luod minus raw."""
    out: dict[str, dict[int, float]] = {}
    for step, samples in (("preserve", preserved), ("reclaim", reclaimed)):
        for mib, m in samples.items():
            size = int(mib)
            raw, via = median(m["raw"]), median(m["luod"])
            measured = {"raw": raw, "luod": via, "own": via - raw, "rss": median(m["rss"])}
            for measure, value in measured.items():
                out.setdefault(f"{step} {measure}", {})[size] = value
    return out


def per_gib(curve: dict[int, float]) -> float:
    sizes = list(curve)
    return statistics.linear_regression([s / 1024 for s in sizes], list(curve.values())).slope


def growth(curve: dict[int, float]) -> str:
    """The exponent over the two largest sizes; luod's own time can be within the noise of
    the difference (zero or below), where no exponent means anything."""
    (small, a), (large, b) = sorted(curve.items())[-2:]
    if a <= 0 or b <= 0:
        return "n/a (within noise)"
    exponent = math.log(b / a) / math.log(large / small)
    flag = "worse than linear" if exponent > SUPERLINEAR else "at most linear"
    return f"{exponent:.2f}, {flag}"


def plot(data: dict[str, dict[int, float]]) -> list[Path]:
    pyplot = plots.pyplot()
    figure, (times, own, memory) = pyplot.subplots(1, 3, figsize=(15, 4))
    for key in ("preserve raw", "preserve luod", "reclaim raw", "reclaim luod"):
        sizes = list(data[key])
        times.loglog(sizes, [data[key][s] for s in sizes], marker="o", label=key)
    times.set_ylabel("seconds")
    for key in ("preserve own", "reclaim own"):  # a difference: can be below zero, linear axis
        sizes = list(data[key])
        own.semilogx(sizes, [data[key][s] * 1e3 for s in sizes], marker="o", label=key)
    own.axhline(0, color="grey", linewidth=0.5)
    own.set_ylabel("luod's own time (ms): through luod - raw")
    for key in ("preserve rss", "reclaim rss"):
        sizes = list(data[key])
        memory.semilogx(sizes, [data[key][s] / 1e6 for s in sizes], marker="o", label=key)
    memory.set_ylim(0, 1.25 * max(data["preserve rss"].values()) / 1e6)
    memory.set_ylabel("luod RSS (MB)")
    for axes in (times, own, memory):
        axes.set_xlabel("memfd size (MiB)")
        axes.legend()
    figure.suptitle("luod's cost against the guest memory size (real kernel, TCG guest)")
    return plots.save(figure, "guest_memory")


def report_of(preserved: dict[str, Any], reclaimed: dict[str, Any]) -> str:
    data = curves(preserved, reclaimed)
    rows = []
    for step in ("preserve", "reclaim"):
        sizes = list(data[f"{step} raw"])
        for size in sizes:
            raw, via = data[f"{step} raw"][size], data[f"{step} luod"][size]
            rows.append([f"{step} {size} MiB", human(raw), human(via), f"{via / raw:.2f}",
                         signed(via - raw),
                         f"{data[f'{step} rss'][size] / 1e6:.1f} MB"])  # fmt: skip
    fits = []
    for step in ("preserve", "reclaim"):
        own, held = data[f"{step} own"], data[f"{step} rss"]
        fits.append([f"{step}: luod's own time", f"{signed(per_gib(own))} per GiB", growth(own)])
        fits.append([f"{step}: luod's RSS", f"{per_gib(held) / 1e3:.1f} kB per GiB", growth(held)])
    paths = plot(data)
    kernel = "raw PRESERVE_FD" + " / RETRIEVE_FD"
    return (
        f"luod's cost against the guest memory size (real kernel, TCG guest of {GUEST_MEMORY}; "
        f"medians of {ROUNDS} PRESERVEs, and of the RECLAIMs after one kexec: "
        f"{', '.join(f'{n} of {mib} MiB' for mib, n in RECLAIM_MIB.items())})\n"
        + table(["step", kernel, "through luod", "ratio", "luod's own", "luod RSS"], rows)
        + "\n\n"
        + table(["curve", "fit (slope)", "exponent, two largest sizes"], fits)
        + "\nplot: "
        + ", ".join(os.path.relpath(p, REPO) for p in paths)
    )


def report() -> str:
    if os.environ.get("LUOD_BENCH_NO_VM") == "1":
        return "Guest memory size (bench/guest_memory.py): skipped (LUOD_BENCH_NO_VM=1)"
    with tempfile.TemporaryDirectory() as tmp:
        preserved, reclaimed = run_vm(Path(tmp))
    plots.OUT.mkdir(parents=True, exist_ok=True)  # the samples beside the plot, to look at again
    samples = {"preserve": preserved, "reclaim": reclaimed}
    (plots.OUT / "guest_memory.json").write_text(json.dumps(samples, indent=1))
    return report_of(preserved, reclaimed)


if __name__ == "__main__":
    if sys.argv[1:2] == ["first"]:
        guest_first()
    elif sys.argv[1:2] == ["after"]:
        guest_after()
    else:
        print(report())
