"""Issue 17's per-request and start-up targets on the real kernel: one run of the bare 7.2.13
guest (tests/vm/qemu.py: the host's root over 9p, this venv's python3), across real kexecs.

Boot 1: bench.preserve_cost's measures on /dev/liveupdate (raw PRESERVE_FD, luod's bookkeeping
in process, a minimal agent's round trip, a PRESERVE through luod, 16 files per request), 4 KiB
and 64 MiB; then luod (REST API on, custody in memory: no keeper process, as with systemd's fd
store) takes one VM (4 MiB) from a VMM that exits, and KEXEC (luod's reboot(KEXEC)).
Boots 2..KEXECS+1, each right after a real kexec: ``python3 -c pass`` run BARE times, then luod
exec'd and the VM reclaimed by a client polling its socket: exec -> first RECLAIM answered.
luod's own stamps (history: ``luod_start`` once imported and built, ``sessions_retrieved`` as
it serves, the VM's ``reclaimed``) split that span; the last boot adds where the imports go
(``-X importtime``, warm) and a warm start on an empty state dir. Every boot but the last hands
the VM over again and kexecs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import boot_breakdown, cgroup_migration, handover, preserve_cost
from bench.stats import human, median, signed, table
from luod.core import timeline
from luod.vmm.client import Client
from tests.vm import log_port

REPO = Path(__file__).resolve().parents[1]
KEXECS = 2
BARE = 5
VM = "vm1"
STATE = Path("/run/bench-luod/state")  # tmpfs: the manifest crosses in session "luod"
TARGETS = {"4 KiB": 2.0, "64 MiB": 1.10}  # luod / raw PRESERVE_FD
FIRST_RECLAIM_TARGET = 3.0  # exec -> first RECLAIM / python3 -c pass
PASS = (sys.executable, "-c", "pass")


# --- in the guest ----------------------------------------------------------------------------
def share() -> Path:
    return Path(os.environ["LUOD_VM_SHARE"])


def spawn_luod(
    state: Path, tag: str = "", *extra: str, disk: Path | None = None
) -> subprocess.Popen[bytes]:
    """luod with its state directory ``state`` (tmpfs: the manifest crosses the kexec in
    session ``luod``), or ``disk`` where given (kept across the kexec, as /var/lib/luod is on
    a host); its runtime directory and configuration beside ``state`` either way. Its log: the
    guest's log port when it has one (tests/vm/log_port.py), else a file on the share."""
    config = state.parent / "luod-vm.toml"  # no /boot/vmlinuz-RELEASE: the image booted
    config.write_text(f'[kexec]\nrunning_image = "{os.environ["NEXT_KERNEL"]}"\n')
    log = log_port.sink(f"luod-{os.environ['LUOD_VM_STAGE']}{tag}", share())
    command = [sys.executable, "-m", "luod", "--config", str(config), "--state-dir"]
    command += [str(disk or state), "--runtime-dir", str(state.parent / "run")]
    command += ["--custody", "memory"]
    return subprocess.Popen([*command, *extra], stdout=log, stderr=log)


def _hand_over_and_kexec(state: Path, fd: Any) -> None:
    """One VM handed over by a VMM that goes away, then luod's KEXEC (never returns)."""
    socket = state.parent / "run" / "liveupdate.sock"
    handover.wait_for_socket(socket, 300)
    with Client(socket) as vmm:
        vmm.register(VM)
        vmm.preserve(VM, {"ram0": fd})
    os.sync()
    with Client(socket) as operator:
        operator.kexec(os.environ["NEXT_KERNEL"])
    raise RuntimeError("KEXEC returned")


def guest_first() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        measures = preserve_cost.measure(Path(tmp), real_kernel=True)
    (share() / "preserve.json").write_text(json.dumps(measures))
    state = STATE
    state.mkdir(parents=True)
    spawn_luod(state)
    _hand_over_and_kexec(state, handover.filled(4 << 20))


def timed_run(command: tuple[str, ...]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - started


def guest_sample(last: bool) -> None:
    """exec -> first RECLAIM answered, beside python3 -c pass, right after this kexec."""
    state = STATE
    state.mkdir(parents=True)
    bare = [timed_run(PASS) for _ in range(BARE)]
    socket = state.parent / "run" / "liveupdate.sock"
    exec_at, started = time.time(), time.perf_counter()
    luod = spawn_luod(state)
    handover.wait_for_socket(socket, 300)
    with Client(socket) as vmm:
        fds = vmm.reclaim(VM)
        first = time.perf_counter() - started
        vmm.done(VM)
    sample = {"bare": bare, "first_reclaim": first, "exec_at": exec_at}
    sample["record"] = completed(state)
    if last:
        sample["after"] = after_measures()
    stage = os.environ["LUOD_VM_STAGE"]
    (share() / f"sample-{stage}.json").write_text(json.dumps(sample))
    if not last:
        _hand_over_and_kexec(state, fds["ram0"])
    luod.terminate()
    luod.wait(60)


def completed(state: Path) -> dict[str, Any]:
    """The update's record once the DONE completed it, from luod's history file: HISTORY on the
    VMM socket cannot carry the record of an update of 150 VMs or more (one frame), and the
    guest's luod serves no REST."""
    records: list[dict[str, Any]] = []
    for _ in range(600):
        records = timeline.read_history(state)
        if records and records[-1]["outcome"] == "completed":
            return records[-1]
        time.sleep(0.1)
    raise TimeoutError(f"the update did not complete: {records[-1:]}")


def after_measures() -> dict[str, Any]:
    """Warm, in the same guest: python3 -c pass, import luod.main, the imports' top
    cumulative costs, and luod's exec -> serving on an empty state dir."""
    warm = [timed_run(PASS) for _ in range(BARE)]
    imports = [timed_run((sys.executable, "-c", "import luod.main")) for _ in range(3)]
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import luod.main"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stderr
    state = Path("/run/bench-luod/warm/state")
    state.mkdir(parents=True)
    started = time.perf_counter()
    luod = spawn_luod(state, "-warm", "--no-api")
    handover.wait_for_socket(state.parent / "run" / "liveupdate.sock", 300)
    with Client(state.parent / "run" / "liveupdate.sock") as client:
        client.hello()
    serving = time.perf_counter() - started
    luod.terminate()
    luod.wait(60)
    return {
        "migrations": cgroup_migration.measure(),
        "bare": warm,
        "import": imports,
        "top": boot_breakdown.top_imports(traced),
        "serving": serving,
    }


# --- on the host -----------------------------------------------------------------------------
def run_vm(workdir: Path, kexecs: int = KEXECS) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from bench.startup import byte_compile
    from tests.vm.qemu import resolve_kernel, run_guest

    byte_compile()  # the guest reads the host's tree read-only: compiled here, once
    kernel = resolve_kernel()
    steps = ["first", *["sample"] * (kexecs - 1), "last"]
    stages = [f"cd {REPO} && exec {sys.executable} -m bench.vm_targets {s}" for s in steps]
    result = run_guest(
        stages,
        kernel=kernel,
        timeout=300 + 150 * kexecs,
        workdir=workdir,
        env={"NEXT_KERNEL": str(kernel)},
        log_port=True,  # luod logs as to a host's journal, not to a 9p file (tests/vm/log_port.py)
    ).check()
    share = result.share
    preserve = json.loads((share / "preserve.json").read_text())
    samples = [json.loads((share / f"sample-{n}.json").read_text()) for n in range(2, kexecs + 2)]
    return preserve, samples


def preserve_table(measures: dict[str, dict[str, float]]) -> str:
    rows = []
    for label, m in measures.items():
        ratio, target = m["luod"] / m["raw"], TARGETS[label]
        verdict = "PASS" if ratio <= target else "MISS"
        rows.append([label, human(m["raw"]), human(m["luod"]), f"{ratio:.2f} {verdict}"])
        rows[-1] += [f"<= {target:g}", signed(m["luod"] - m["floor"])]
        rows[-1].append(preserve_cost.batched_text(m["batched"], m["raw"]))
    header = ["PRESERVE (median)", "raw ioctl", "through luod", "ratio", "target"]
    header += ["luod - minimal agent", f"{preserve_cost.BATCH} per request, per file (/raw)"]
    full = preserve_cost.rows("kernel (VM)", measures)
    return (
        table(header, rows)
        + "\n\nThe parts (see bench/preserve_cost.py):\n"
        + table(
            ["", "raw", "core (/raw)", "floor (/raw)", "luod (/raw)", "luod-floor", "batched"], full
        )
    )


def _since(record: dict[str, Any], exec_at: float, name: str) -> float | None:
    stamp = record["events"].get(name) or record["vms"].get(VM, {}).get(name)
    return None if stamp is None else float(stamp["realtime"]) - exec_at


def reclaim_table(samples: list[dict[str, Any]]) -> str:
    rows = []
    for boot, sample in enumerate(samples, start=2):
        first, bare = sample["first_reclaim"], sample["bare"]
        cold, warm = bare[0], median(bare[1:])
        parts = [
            _since(sample["record"], sample["exec_at"], name)
            for name in ("luod_start", "sessions_retrieved", "reclaimed")
        ]
        rows.append(
            [
                f"boot {boot}",
                human(first),
                f"{human(cold)} / {human(warm)}",
                _verdict(first / cold),
                _verdict(first / warm),
                *("-" if p is None else human(p) for p in parts),
            ]
        )
    header = ["after kexec", "exec -> 1st RECLAIM", "pass: 1st / rest", "/ 1st pass"]
    header += ["/ warm pass", "exec -> luod_start (imported)", "-> serving", "-> RECLAIM handled"]
    return table(header, rows)


def _verdict(ratio: float) -> str:
    return f"{ratio:.2f} {'PASS' if ratio <= FIRST_RECLAIM_TARGET else 'MISS'}"


def after_text(after: dict[str, Any]) -> str:
    imports = ", ".join(f"{name} {human(cost)}" for name, cost in after["top"])
    return (
        f"warm, same guest: python3 -c pass {human(median(after['bare']))}, "
        f"import luod.main {human(median(after['import']))}, "
        f"luod exec -> serving (empty state, no REST) {human(after['serving'])}\n"
        f"luod.main's costliest imports (-X importtime, one level down, cumulative): {imports}"
    )


def report() -> str:
    if os.environ.get("LUOD_BENCH_NO_VM") == "1":
        return "In-VM targets (bench/vm_targets.py): skipped (LUOD_BENCH_NO_VM=1)"
    with tempfile.TemporaryDirectory() as tmp:
        preserve, samples = run_vm(Path(tmp))
    return "\n\n".join(
        [
            "PRESERVE through luod vs raw PRESERVE_FD, real kernel (7.2.13 guest, QEMU TCG)\n"
            + preserve_table(preserve),
            f"exec -> first RECLAIM after a real kexec vs python3 -c pass (same guest; target "
            f"<= {FIRST_RECLAIM_TARGET:g}x; the first pass after the kexec reads cold files, "
            "as luod does)\n" + reclaim_table(samples),
            after_text(samples[-1]["after"]),
            cgroup_migration.text(samples[-1]["after"]["migrations"]),
        ]
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["first"]:
        guest_first()
    elif sys.argv[1:2] in (["sample"], ["last"]):
        guest_sample(last=sys.argv[1] == "last")
    else:
        print(report())
