"""Baseline table: LUO operation costs on the real kernel (QEMU/TCG guest) and the simulator."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from bench import kernel_ops
from bench.stats import human, table
from luod.kernel.sim import SimulatedKexec, sim_backend
from tests.contract.harness import FAKE_BZIMAGE, sim_kernel
from tests.vm.qemu import resolve_kernel, run_guest

REPO = Path(__file__).resolve().parents[1]
ORDER = [
    "create_session",
    "preserve_small",
    "preserve_large",
    "retrieve_session",
    "retrieve_small",
    "retrieve_large",
    "finish_small",
    "finish_large",
]
LABELS = {"small": "4 KiB", "large": "64 MiB"}


def sim_costs() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "sim"
        backend = sim_backend(state)
        results = kernel_ops.before_kexec(backend)
        image = Path(tmp) / "bzImage"
        image.write_bytes(FAKE_BZIMAGE)
        backend.load_kernel(image, cmdline=backend.info().cmdline)
        with contextlib.suppress(SimulatedKexec):
            backend.reboot_kexec()
        for session in kernel_ops.KEEP:
            session.close()
        kernel_ops.KEEP.clear()
        after = sim_backend(state)
        results.update(kernel_ops.after_kexec(after))
        sim_kernel(after).close()
        return results


def kernel_costs() -> dict[str, float]:
    kernel = resolve_kernel()
    python = shlex.quote(sys.executable)
    out = '"$LUOD_VM_SHARE/bench-{0}.json"'
    stages = [
        f"cd {shlex.quote(str(REPO))} && exec {python} -m bench.kernel_ops {phase} "
        f"{out.format(phase)} {shlex.quote(str(kernel))}"
        for phase in ("before", "after")
    ]
    with tempfile.TemporaryDirectory() as workdir:
        result = run_guest(stages, kernel=kernel, timeout=300, workdir=Path(workdir)).check()
        share = result.run_dir / "share"
        costs = json.loads((share / "bench-before.json").read_text())
        costs.update(json.loads((share / "bench-after.json").read_text()))
    return dict(costs)


def label(op: str) -> str:
    for kind, text in LABELS.items():
        op = op.replace(f"_{kind}", f" {text}")
    return op


def report() -> str:
    sim = sim_costs()
    kernel = kernel_costs() if os.environ.get("LUOD_BENCH_NO_VM") != "1" else {}
    rows = []
    for op in ORDER:
        k, s = kernel.get(op, float("nan")), sim.get(op, float("nan"))
        ratio = f"{k / s:.2f}" if k == k and s == s and s > 0 else "-"
        rows.append([label(op), human(k), human(s), ratio])
    header = ["operation (median)", "kernel (QEMU TCG guest)", "simulator (host)", "kernel/sim"]
    return "LUO baseline costs through luod.kernel\n" + table(header, rows)
