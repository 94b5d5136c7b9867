"""The blackout budget on the real kernel: bench.blackout_budget's six parts per VM for 1, 10
and 100 VMs, in the bare 7.2.13 guest (tests/vm/qemu.py, QEMU TCG), across real kexecs.

Boot 1 starts luod (no REST, custody in memory), hands COUNTS[0] VMs over (demo VMMs as asyncio
clients: register, preserve 4 KiB, READY on FREEZE) and runs an update (prepare, freeze, luod's
own reboot(KEXEC)). Each next boot starts luod, and the VMs reclaim and send DONE as soon as its
socket appears; then ``python3 -c pass`` is timed, and, but in the last boot, the next count's
VMs are handed over and the next update runs. UPDATES updates per count: the medians and p99s
are over the VMs of those updates (part 2, one value an update, over the updates).

luod logs to the guest's virtio-serial port (tests/vm/log_port.py), as to a host's journal: a
line to a file on the 9p share waits for a host thread each time, 0.4 ms more than a pipe
(bench/NOTES.md). ``run_vm(log_port=False)`` logs to the share, for a run side by side.

reboot() -> luod's exec crosses the kexec; the guest's clock does not: the new kernel sets it
from the CMOS clock, to the second. So each boot measures its clock against the host's: it
creates files on the 9p share, whose mtime the host's file system sets from the host's clock
(coarse: a few ms), and keeps the create that took least time. That span is luod's stamp of its
reboot() call (boot k's clock, corrected) to the exec of luod (boot k+1's, corrected), split at
the new kernel's start (CLOCK_BOOTTIME) and at PID 1's (/proc/1/stat). Part 3, the kernel's, ends
at PID 1: what follows until luod's exec is this guest's init script and the bench's own Python
start (about 3 s under TCG), which a host's init does its own way; it is shown apart.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import blackout_budget, handover, vm_targets
from bench.blackout_budget import COUNTS, Measures, Vmm
from bench.stats import human, median, table
from luod.daemon import process_start
from luod.kernel import fdtable
from luod.vmm.client import Client
from tests.vm import log_port

REPO = Path(__file__).resolve().parents[1]
VMM_CGROUP = Path("/sys/fs/cgroup/bench-vmms")
LUOD_CGROUP = Path("/sys/fs/cgroup/bench-luod")
"""With LUOD_BENCH_VMM_CGROUP=1 luod runs in LUOD_CGROUP and the VMMs (this bench's process,
once luod is spawned) in VMM_CGROUP: as under systemd, where luod is a service and each VMM a
unit, every RECLAIM is retrieved inside another cgroup than luod's (docs/kernel.md §6.4). Its
state directory is then on the share (``kept_state``), kept across the kexec as /var/lib/luod is
on a host: after a kexec luod begins its kept retrieve helper before its imports when it finds
the handoff's kexec line there (luod.start.begin_retriever)."""
UPDATES = 3
"""Updates per VM count: part 2 is one value per update (the last READY to reboot()), so its
median and p99 are over updates, not over one update's VMs. Each adds a boot (10-20 s)."""
OWN_CGROUP_COUNT = 100
STATE = vm_targets.STATE
CLOCK_TRIES = 9
WAIT = 600.0  # seconds, for the VMMs of one step under TCG


# --- in the guest ----------------------------------------------------------------------------
def host_offset(directory: Path | None = None, tries: int = CLOCK_TRIES) -> dict[str, float]:
    """The host's clock minus this guest's, from the mtime of files created in ``directory``
    (default: the 9p share, whose files the host's file system stamps); ``error``: half the
    quickest create's duration (the host's coarse file time adds up to a tick)."""
    best: tuple[float, float] | None = None
    for n in range(tries):
        path = (directory or vm_targets.share()) / f".clock-{os.getpid()}-{n}"
        before = time.time()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        after = time.time()
        os.close(fd)
        host = os.stat(path).st_mtime_ns / 1e9
        path.unlink()
        half = (after - before) / 2
        if best is None or half < best[1]:
            best = (host - (before + after) / 2, half)
    assert best is not None
    return {"offset": best[0], "error": best[1]}


def _socket() -> Path:
    return STATE.parent / "run" / "liveupdate.sock"


def _stage() -> int:
    return int(os.environ["LUOD_VM_STAGE"])


async def hand_over_and_update(count: int) -> None:
    """``count`` VMs handed over, then an update whose kexec ends this boot (never returns)."""
    await asyncio.to_thread(handover.wait_for_socket, _socket(), 300)
    vmms = [Vmm(f"vm{i}") for i in range(count)]
    holding = await blackout_budget.hand_over_all(vmms, _socket(), WAIT)
    clock = vm_targets.share() / f"clock-{_stage()}.json"
    clock.write_text(json.dumps(host_offset()))  # seconds before the kexec: no drift to speak of
    cmdline = Path("/proc/cmdline").read_text().strip()  # the next boot runs the next stage
    with Client(_socket(), timeout=WAIT) as operator:
        await asyncio.to_thread(
            operator.update,
            os.environ["NEXT_KERNEL"],
            cmdline=cmdline,
            deadlines={"freezing": 120},
            wait=True,
        )
    await asyncio.gather(*holding, return_exceptions=True)
    raise RuntimeError("the update returned: no kexec")


def guest_first(count: int) -> None:
    STATE.mkdir(parents=True)
    into_cgroup(LUOD_CGROUP)
    vm_targets.spawn_luod(STATE, "", "--no-api", disk=kept_state())
    into_cgroup(VMM_CGROUP)
    asyncio.run(hand_over_and_update(count))


def guest_reclaim(count: int, next_count: int | None) -> None:
    """This boot's sample: the ``count`` VMs of the last update reclaim (parts 3 to 6 end
    here); then the next count's VMs are handed over and updated, unless ``next_count`` is
    None."""
    STATE.mkdir(parents=True)
    clock = host_offset()
    exec_at, since_boot = time.time(), time.clock_gettime(time.CLOCK_BOOTTIME)
    into_cgroup(LUOD_CGROUP)
    luod = vm_targets.spawn_luod(STATE, "", "--no-api", disk=kept_state())
    into_cgroup(VMM_CGROUP)
    vmms = [Vmm(f"vm{i}") for i in range(count)]
    asyncio.run(blackout_budget.reclaim_all(vmms, _socket(), WAIT))
    sample = _sample(vmms, exec_at, {"exec": since_boot, "init": init_started()}, clock)
    sample["bare"] = [vm_targets.timed_run(vm_targets.PASS) for _ in range(vm_targets.BARE)]
    (vm_targets.share() / f"sample-{_stage()}.json").write_text(json.dumps(sample))
    if next_count is not None:
        asyncio.run(hand_over_and_update(next_count))
    luod.terminate()
    luod.wait(60)


def apart() -> bool:
    return os.environ.get("LUOD_BENCH_VMM_CGROUP") == "1"


def kept_state() -> Path | None:
    """luod's state directory on the share when luod and the VMMs run apart (None: STATE, on
    tmpfs). The share has no page cache in front: each of luod's journal appends waits for the
    host there, which a host's disk does not make it do (bench/NOTES.md)."""
    if not apart():
        return None
    state = vm_targets.share() / "luod-state"
    state.mkdir(mode=0o700, exist_ok=True)
    return state


def into_cgroup(cgroup: Path) -> None:
    """This process (and what it spawns next) into ``cgroup``, when asked
    (LUOD_BENCH_VMM_CGROUP=1)."""
    if apart():
        cgroup.mkdir(exist_ok=True)
        (cgroup / "cgroup.procs").write_text("0")


def across_kexec(
    stamp: float, before: dict[str, float], later: float, after: dict[str, float]
) -> float:
    """Seconds from ``stamp`` (read on the clock of the boot before the kexec, whose offset to
    the host's is ``before``) to ``later`` (on the next boot's clock, offset ``after``)."""
    return (later + after["offset"]) - (stamp + before["offset"])


def init_started() -> float:
    """When PID 1 started, in seconds since the kernel started (/proc/1/stat: clock ticks)."""
    started = process_start.since_boot(Path("/proc/1/stat"))
    if started is None:
        raise RuntimeError("/proc/1/stat does not say when PID 1 started")
    return started


def crossing(
    stage: int, exec_at: float, since_boot: dict[str, float], clock: dict[str, float]
) -> dict[str, Any]:
    """reboot() in boot ``stage - 1`` (luod's ``kexec`` line) -> luod's exec in this boot, on
    the host's clock, split at the new kernel's start and PID 1's: ``kernel`` is part 3 (until
    PID 1; what follows is this guest's init and the bench's own start, shown apart)."""
    share = vm_targets.share()
    name = f"luod-{stage - 1}"
    rebooted, sync = blackout_budget.kexec_stamp(log_port.read(share, name), name)
    before = json.loads((share / f"clock-{stage - 1}.json").read_text())
    to_exec = across_kexec(rebooted, before, exec_at, clock)
    return {
        "rebooted": rebooted,
        "sync": sync,
        "before": before,
        "kernel": to_exec - (since_boot["exec"] - since_boot["init"]),
        "split": {
            "reboot_to_start": to_exec - since_boot["exec"],
            "start_to_init": since_boot["init"],
            "init_to_exec": since_boot["exec"] - since_boot["init"],
        },
        "clock_error": clock["error"] + before["error"],
    }


def _sample(
    vmms: list[Vmm], exec_at: float, since_boot: dict[str, float], clock: dict[str, float]
) -> dict[str, Any]:
    """Parts 1 to 6 per VM (part 3: ``crossing``)."""
    crossed = crossing(_stage(), exec_at, since_boot, clock)
    sync = crossed["sync"]
    run = {
        "record": vm_targets.completed(kept_state() or STATE),
        "rebooted": crossed["rebooted"],
        "sync": sync,
        "kernel": crossed["kernel"],
        "exec": exec_at,
        "vmms": vmms,
    }
    return {
        "count": len(vmms),
        "parts": blackout_budget.parts_of(run),
        "fan_out": blackout_budget.fan_out(run),
        "first": blackout_budget.first_reclaim(run),
        "own": None if sync is None else blackout_budget.pre_reboot(run) - sync,
        "kernel": crossed["split"],
        "clock_error": crossed["clock_error"],
    }


# --- on the host -----------------------------------------------------------------------------
def run_vm(
    workdir: Path,
    counts: tuple[int, ...] = COUNTS,
    module: str = "bench.blackout_vm",
    timeout: float | None = None,
    memory: str = "2G",
    vmm_cgroup: bool = False,
    log_port: bool = True,
) -> list[dict[str, Any]]:
    """``module``'s guest stages (``first N``, ``reclaim N NEXT``..., ``reclaim N``) in one VM
    run, and the sample each boot after a kexec wrote; ``vmm_cgroup``: the VMMs in a cgroup
    apart from luod's (VMM_CGROUP); ``log_port``: luod logs to the guest's virtio-serial port,
    as to a host's journal (tests/vm/log_port.py), not to a file on the 9p share."""
    from bench.startup import byte_compile
    from tests.vm.qemu import resolve_kernel, run_guest

    byte_compile()  # the guest reads the host's tree read-only: compiled here, once
    kernel = resolve_kernel()
    steps = [f"first {counts[0]}"]
    steps += [f"reclaim {done} {following}" for done, following in itertools.pairwise(counts)]
    steps.append(f"reclaim {counts[-1]}")
    stages = [f"cd {REPO} && exec {sys.executable} -m {module} {s}" for s in steps]
    result = run_guest(
        stages,
        kernel=kernel,
        # 1000 demo VMMs: about 4 min under TCG
        timeout=timeout or 300 + 300 * len(counts) + sum(counts),
        memory=memory,
        workdir=workdir,
        env={"NEXT_KERNEL": str(kernel), "LUOD_BENCH_VMM_CGROUP": "1" if vmm_cgroup else "0"},
        log_port=log_port,
    ).check()
    return [
        json.loads((result.share / f"sample-{boot}.json").read_text())
        for boot in range(2, len(counts) + 2)
    ]


def measures_of(samples: list[dict[str, Any]]) -> Measures:
    found = Measures()
    for sample in samples:
        count = int(sample["count"])
        found.parts.setdefault(count, []).extend(sample["parts"])
        found.fan_out.setdefault(count, []).append(float(sample["fan_out"]))
        own = found.own.setdefault(count, [])
        own += [] if sample["own"] is None else [float(sample["own"])]
        found.first.append(float(sample["first"]))
        found.bare.append(median(sample["bare"][1:]))  # the first pass reads cold files
    return found


def kernel_table(samples: list[dict[str, Any]]) -> str:
    """reboot() -> luod's exec, split at the new kernel's start and at PID 1's, and the clock
    correction's error bound."""
    rows = []
    for sample in samples:
        split = sample["kernel"]
        rows.append(
            [
                str(sample["count"]),
                human(split["reboot_to_start"]),
                human(split["start_to_init"]),
                human(split["init_to_exec"]),
                f"± {human(sample['clock_error'])}",
            ]
        )
    header = ["VMs", "reboot() -> new kernel starts", "-> PID 1 starts (part 3 ends)"]
    header += ["-> luod exec (guest-init, the bench's start)", "clock correction"]
    return table(header, rows)


def summed_up(samples: list[dict[str, Any]], where: str, name: str) -> tuple[Measures, float, str]:
    """The samples' measures, ``python3 -c pass`` in the guest (median) and the plot's line."""
    found = measures_of(samples)
    paths = blackout_budget.plot(found.parts, where, name)
    plotted = f"plot: {', '.join(os.path.relpath(p, REPO) for p in paths)}"
    return found, statistics.median(found.bare), plotted


def report(counts: tuple[int, ...] = COUNTS) -> str:
    if os.environ.get("LUOD_BENCH_NO_VM") == "1":
        return "Blackout budget in the VM (bench/blackout_vm.py): skipped (LUOD_BENCH_NO_VM=1)"
    with tempfile.TemporaryDirectory() as tmp:
        samples = run_vm(Path(tmp), repeated(counts))
    where = "real kernel, 7.2.13 guest, QEMU TCG"
    found, python, plotted = summed_up(samples, where, "blackout_vm")
    return (
        f"Blackout budget in the VM ({where}; {UPDATES} updates per VM count, real kexecs, "
        "luod logging to a virtio-serial port; "
        f"python3 -c pass in the guest: {human(python)})\n{plotted}\n\n"
        + blackout_budget.budget_table(found)
        + "\n\nreboot() -> luod's exec, split (part 3 is the kernel's share: until PID 1):\n"
        + kernel_table(samples)
        + "\n\n"
        + apart_report(found)
    )


def repeated(counts: tuple[int, ...], updates: int | None = None) -> tuple[int, ...]:
    """Each count ``updates`` times over (UPDATES), in order: one update per boot."""
    return tuple(count for count in counts for _ in range(updates or UPDATES))


def apart_report(same: Measures, count: int = OWN_CGROUP_COUNT) -> str:
    """``count`` VMs again, luod and the VMMs each in a cgroup of their own (as a service and
    its VMM units are under systemd): each RECLAIM retrieved inside the VMMs' cgroup, by luod's
    kept helper or a fork of luod (luod's ``retrieved-in-cgroup`` lines say which), beside the
    run above (VMMs in luod's cgroup)."""
    with tempfile.TemporaryDirectory() as tmp:
        samples = run_vm(Path(tmp), (count,), vmm_cgroup=True)
        served = retrieved_via(Path(tmp))
    apart = measures_of(samples)
    rows = []
    for name, found in (("luod's cgroup", same), ("a cgroup apart from luod's", apart)):
        if count not in found.parts:  # the run above had other counts
            continue
        part5 = blackout_budget.summary(found.parts[count], 4)
        rows.append(
            [
                name,
                human(median(found.fan_out[count])),
                human(part5[0]) if part5 else "-",
                human(part5[1]) if part5 else "-",
            ]
        )
    text = (
        f"{count} VMs, the VMMs in luod's cgroup or in one apart from luod's own (every RECLAIM"
        " charged there; apart, luod's state directory is on the 9p share, kept across the"
        " kexec, and each journal append waits for the host):\n"
    )
    text += table(["VMMs in", "fan-out", "part 5 median", "part 5 p99"], rows)
    for via, spans in sorted(served.items()):
        text += f"\n  retrieved via {via}: {len(spans)} RECLAIMs, median {human(median(spans))}"
    return text


def retrieved_via(workdir: Path) -> dict[str, list[float]]:
    """From luod's logs of the last boot: each ``retrieved-in-cgroup`` span, by ``via``."""
    logs = sorted(workdir.rglob("luod-*.log"))
    served: dict[str, list[float]] = {}
    for line in logs[-1].read_text(errors="replace").splitlines() if logs else []:
        if '"retrieved-in-cgroup"' in line:
            entry = json.loads(line)
            served.setdefault(str(entry["via"]), []).append(float(entry["ms"]) / 1e3)
    return served


def main(argv: list[str]) -> None:
    fdtable.raise_limit()  # a socket and a memfd per VM: more than 1024 fds at 1000 VMs
    if argv[0] == "first":
        guest_first(int(argv[1]))
    elif argv[0] == "reclaim":
        guest_reclaim(int(argv[1]), int(argv[2]) if len(argv) > 2 else None)
    else:  # report [COUNT...]: on the host, VM counts other than COUNTS (1000 runs ~4 min)
        print(report(tuple(int(a) for a in argv[1:]) or COUNTS))


if __name__ == "__main__":
    main(sys.argv[1:] or ["report"])
