"""The blackout budget of real QEMU VMs: bench.blackout_budget's six parts per VM for 1, 4 and
10 luod-qemu VMs, in the bare 7.2.13 guest (tests/vm/qemu.py, QEMU TCG), across real kexecs.

Each VM is a real QEMU (the Debian package's, nested TCG) running the boot-sector guest of
tests/vm/l2guest.py in 32 MiB, under ``luod-qemu run``: its RAM a memfd handed to luod, and on
FREEZE QMP ``stop``, the device state saved (``x-ignore-shared``) and preserved, then READY.
Boot 1 starts luod (no REST, custody in memory) and COUNTS[0] VMs, then an update (prepare,
freeze, luod's own reboot(KEXEC)). Each next boot starts ``luod-qemu restore`` for every VM of
that update together with luod, as a bare init should (docs/operations.md §2.3: the VMMs wait
for luod's socket); each restore reclaims, starts QEMU with ``-incoming defer``, loads the
device state, ``cont``, then DONE, and protects its VM again. Then, but in the last boot, the
next count's new VMs start beside the restored ones and the next update runs.

The parts come from luod's own update record (its stamps of each VM's FREEZE, READY, RECLAIM
answered and DONE, of the sessions retrieved) and its ``kexec`` log line (reboot() called);
part 3 and the clocks across the kexec as in bench.blackout_vm (PID 1 ends the kernel's part).
Beside them, each VM's guest-visible pause: luod-qemu's QMP ``stop`` before the kexec to its
``cont`` after it, on the host's clock.

100 VMs, the issue's third count, do not fit: 100 nested QEMUs and their luod-qemu interpreters
in a 2-vCPU TCG guest; bench.blackout_vm runs 100 (and 1000) demo VMMs on the real kernel.
"""

from __future__ import annotations

import errno
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import blackout_budget, blackout_vm, handover, vm_targets
from bench.stats import human, table
from luod.qemu.canary import qemu_args, write_floppy
from luod.vmm.client import Client

REPO = Path(__file__).resolve().parents[1]
COUNTS = (1, 4, 10)
RAM = "32M"
STATE = vm_targets.STATE
WAIT = 900.0  # seconds, for every VM of one step under nested TCG
FREEZING = 300  # seconds: luod's freeze deadline (10 nested QEMUs saving their state)


# --- in the guest ----------------------------------------------------------------------------
def vm_ids(count: int) -> list[str]:
    return [f"q{n}" for n in range(count)]


def _socket() -> Path:
    return STATE.parent / "run" / "liveupdate.sock"


def _stage() -> int:
    return int(os.environ["LUOD_VM_STAGE"])


def _luod_qemu(command: str, vm: str, *extra: str) -> subprocess.Popen[bytes]:
    """``luod-qemu COMMAND --id VM``; its JSON lines to $SHARE/VM-STAGE.log."""
    share = vm_targets.share()
    binary = Path(sys.executable).parent / "luod-qemu"
    args = [str(binary), command, "--id", vm, "--socket", str(_socket())]
    args += ["--report", str(share / "report.jsonl"), "--wait-for-luod", str(WAIT)]
    log = (share / f"{vm}-{_stage()}.log").open("ab")
    return subprocess.Popen([*args, *extra], stdout=log, stderr=subprocess.STDOUT)


def wait_for_event(vm: str, event: str, timeout: float = WAIT) -> dict[str, Any]:
    """The first JSON line ``event`` of VM's luod-qemu in this boot (a restore says
    ``preserved`` after ``restored``, once its VM is protected again)."""
    path = vm_targets.share() / f"{vm}-{_stage()}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in _json_lines(path) if line.get("event") == event]
        if found:
            return found[0]
        time.sleep(0.2)
    raise TimeoutError(f"{vm}: no {event!r} in {path} after {timeout:.0f} s:\n{_tail(path)}")


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects among ``path``'s lines so far; none while it cannot be read yet (missing,
    or ENODATA: 9p read it while luod-qemu appended, as tests/vm/scripts/chaos_guest.py found)."""
    try:
        content = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return []
        raise
    lines = []
    for text in content.splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return [line for line in lines if isinstance(line, dict)]


def _tail(path: Path) -> str:
    return "\n".join(path.read_text().splitlines()[-20:]) if path.exists() else "(no log)"


def start_vms(vms: list[str]) -> list[subprocess.Popen[bytes]]:
    """New VMs under ``luod-qemu run``, each protected (``preserved``) before this returns."""
    floppy = vm_targets.share() / "floppy.img"  # read-only in every QEMU: one for all
    if not floppy.exists():
        write_floppy(floppy)
    started = [_luod_qemu("run", vm, "--ram", RAM, "--", *qemu_args(floppy)) for vm in vms]
    for vm in vms:
        wait_for_event(vm, "preserved")
    return started


def update(vms: list[subprocess.Popen[bytes]]) -> None:
    """The update whose kexec ends this boot (never returns); luod's REST API is up first, as
    when a fleet starts the update (its start is not part of any VM's pause)."""
    handover.wait_for_socket(STATE.parent / "run" / "api.sock", WAIT)
    clock = vm_targets.share() / f"clock-{_stage()}.json"
    clock.write_text(json.dumps(blackout_vm.host_offset()))  # seconds before the kexec
    cmdline = Path("/proc/cmdline").read_text().strip()  # the next boot runs the next stage
    with Client(_socket(), timeout=WAIT) as operator:
        operator.update(
            os.environ["NEXT_KERNEL"], cmdline=cmdline, deadlines={"freezing": FREEZING}, wait=True
        )
    raise RuntimeError(f"the update returned: no kexec ({len(vms)} VMs)")


def guest_first(count: int) -> None:
    STATE.mkdir(parents=True)
    vm_targets.spawn_luod(STATE, "")  # as shipped: with the REST API
    handover.wait_for_socket(_socket(), 300)
    update(start_vms(vm_ids(count)))


def guest_reclaim(count: int, next_count: int | None) -> None:
    """The ``count`` VMs of the last update restored (parts 3 to 6 end here), beside
    ``python3 -c pass``; then, unless ``next_count`` is None, the next count's new VMs start
    beside them and the next update runs."""
    STATE.mkdir(parents=True)
    clock = blackout_vm.host_offset()
    restores = [_luod_qemu("restore", vm) for vm in vm_ids(count)]  # they wait for luod
    exec_at, since_boot = time.time(), time.clock_gettime(time.CLOCK_BOOTTIME)
    luod = vm_targets.spawn_luod(STATE, "")
    restored = {vm: wait_for_event(vm, "restored") for vm in vm_ids(count)}
    record = vm_targets.completed(STATE)
    run = {"record": record, "exec": exec_at, "restored": restored, "clock": clock}
    run["since_boot"] = {"exec": since_boot, "init": blackout_vm.init_started()}
    sample = sample_of(run, _stage())
    sample["bare"] = [vm_targets.timed_run(vm_targets.PASS) for _ in range(vm_targets.BARE)]
    (vm_targets.share() / f"sample-{_stage()}.json").write_text(json.dumps(sample))
    if next_count is not None:
        for vm in vm_ids(count):
            wait_for_event(vm, "preserved")  # protected again: in the next update too
        update(restores + start_vms(vm_ids(next_count)[count:]))
    for process in restores:
        process.terminate()  # the operator stops the VMs: luod drops them
        process.wait(120)
    luod.terminate()
    luod.wait(60)


def sample_of(run: dict[str, Any], stage: int) -> dict[str, Any]:
    """Parts 1 to 6 per VM from luod's record, the kernel's part across the kexec
    (bench.blackout_vm.crossing), and each VM's guest-visible pause on the host's clock."""
    crossed = blackout_vm.crossing(stage, run["exec"], run["since_boot"], run["clock"])
    sync = crossed["sync"]
    parts = parts_of(run["record"], crossed["rebooted"], crossed["kernel"], run["exec"])
    shift = run["clock"]["offset"] - crossed["before"]["offset"]  # the pause spans the kexec
    pauses = {vm: float(event["pause"]) + shift for vm, event in run["restored"].items()}
    stamps = [reclaimed(run["record"], vm) for vm in parts]
    return {
        "count": len(parts),
        "parts": list(parts.values()),
        "pauses": pauses,
        "fan_out": max(stamps) - min(stamps),
        "first": min(stamps) - run["exec"],
        "sync": sync,
        "own": None if sync is None else parts_pre_reboot(parts) - sync,
        "kernel": crossed["split"],
        "clock_error": crossed["clock_error"],
    }


def reclaimed(record: dict[str, Any], vm: str) -> float:
    return float(record["vms"][vm]["reclaimed"]["realtime"])


def parts_of(
    record: dict[str, Any], rebooted: float, kernel: float, exec_at: float
) -> dict[str, list[float | None]]:
    """Per VM (by id), the six parts in seconds, all from luod's stamps but part 3 (reboot()
    -> PID 1) and luod's exec: 5 ends when luod answered the VM's RECLAIM, 6 at its DONE
    (which luod-qemu sends once its QEMU runs again)."""
    vms = record["vms"]
    last_ready = max(float(v["freeze_ack"]["realtime"]) for v in vms.values())
    retrieved = float(record["events"]["sessions_retrieved"]["realtime"])
    out: dict[str, list[float | None]] = {}
    for vm, stamps in sorted(vms.items()):
        answered, done = reclaimed(record, vm), float(stamps["done"]["realtime"])
        out[vm] = [
            float(stamps["freeze_ack"]["realtime"]) - float(stamps["freeze_sent"]["realtime"]),
            rebooted - last_ready,
            kernel,
            retrieved - exec_at,
            answered - retrieved,
            done - answered,
        ]
    return out


def parts_pre_reboot(parts: dict[str, list[float | None]]) -> float:
    """Part 2, the same for every VM of an update."""
    value = next(iter(parts.values()))[1]
    assert value is not None
    return value


# --- on the host -----------------------------------------------------------------------------
def run_vm(workdir: Path, counts: tuple[int, ...] = COUNTS) -> list[dict[str, Any]]:
    return blackout_vm.run_vm(
        workdir, counts, "bench.blackout_qemu", timeout=600 + 240 * sum(counts), memory="3G"
    )


def pause_table(samples: list[dict[str, Any]]) -> str:
    """Each count's guest-visible pause (QMP stop -> cont), the same without this guest's init
    and the bench's start (between PID 1 and luod's exec: not the kernel's, not luod's), the
    sum of the six parts, the fan-out, and part 2's share of the host's sync(2)."""
    rows = []
    for sample in samples:
        pauses = sorted(sample["pauses"].values())
        init = float(sample["kernel"]["init_to_exec"])
        sums = [sum(p for p in parts if p is not None) for parts in sample["parts"]]
        sync = sample.get("sync")
        rows.append(
            [
                str(sample["count"]),
                human(statistics.median(pauses)),
                human(blackout_budget.p99(pauses)),
                human(statistics.median(pauses) - init),
                human(statistics.median(sums)),
                human(sample["fan_out"]),
                "-" if sync is None else human(sync),
                f"± {human(sample['clock_error'])}",
            ]
        )
    header = ["VMs", "guest pause, median", "p99", "median without init -> luod exec"]
    header += ["parts 1-6, median", "reclaim fan-out", "part 2's sync(2)", "clock correction"]
    return table(header, rows)


def report(counts: tuple[int, ...] = COUNTS) -> str:
    if os.environ.get("LUOD_BENCH_NO_VM") == "1":
        return "Blackout budget of QEMU VMs (bench/blackout_qemu.py): skipped (LUOD_BENCH_NO_VM=1)"
    with tempfile.TemporaryDirectory() as tmp:
        samples = run_vm(Path(tmp), counts)
    where = "QEMU VMs, real kernel, 7.2.13 guest, nested TCG"
    found, python, plotted = blackout_vm.summed_up(samples, where, "blackout_qemu")
    return (
        f"Blackout budget of QEMU VMs ({where}; luod-qemu, {RAM} each; one update per VM "
        "count, real kexecs, luod logging to a virtio-serial port; python3 -c pass in the "
        f"guest: {human(python)})\n{plotted}\n\n"
        + blackout_budget.budget_table(found)
        + "\n\nEach VM's guest-visible pause (QMP stop before the kexec -> cont after it):\n"
        + pause_table(samples)
        + "\n(the fan-out here is the VMMs' turns: at most one luod-qemu per CPU starts at once,"
        + " luod.vmm.start_gate; luod's own is bench/blackout_budget.py's)"
        + "\n\nreboot() -> luod's exec, split (part 3 is the kernel's share: until PID 1):\n"
        + blackout_vm.kernel_table(samples)
    )


def main(argv: list[str]) -> None:
    if argv[0] == "first":
        guest_first(int(argv[1]))
    elif argv[0] == "reclaim":
        guest_reclaim(int(argv[1]), int(argv[2]) if len(argv) > 2 else None)
    else:  # report [COUNT...]: on the host
        print(report(tuple(int(a) for a in argv[1:]) or COUNTS))


if __name__ == "__main__":
    main(sys.argv[1:] or ["report"])
