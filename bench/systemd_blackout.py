"""The blackout timeline of the systemd path next to the direct path, and of luod's READY=1 at
exec next to READY=1 once serving: one update each, in the same systemd-262 guest
(tests/vm/systemd/) with the same three demo VMMs (running, answering FREEZE).

Boot 1: kexec.mode = direct (luod calls reboot(KEXEC) itself). Boot 2 runs luod with
``LUOD_READY_AT_EXEC=no`` (a drop-in): the VMM units start once luod serves. Its VMMs reclaim,
hand over again, and a second direct update leads to boot 3, where luod.service runs as
shipped: luod says READY=1 at exec, and the VMM units start beside luod's start. Then
kexec.mode = systemd (luod hands its fds to the fd store and runs ``systemctl kexec``) leads to
boot 4. The timelines come from ``luoctl --json history``
and are printed relative to the start of the freeze.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import boot_breakdown
from bench.stats import table
from luod.cli.moments import epoch
from tests.vm.qemu import resolve_kernel
from tests.vm.systemd import guest

VMS = ("vm-a", "vm-b", "vm-c")
RAM = {"vm-a": "--ram ram0=64M --ram state=4K", "vm-b": "--ram ram0=16M", "vm-c": "--ram ram0=8M"}
UPDATES = (
    ("direct", "READY=1 once serving", "[Service]\nEnvironment=LUOD_READY_AT_EXEC=no\n"),
    ("direct", "READY=1 at exec", None),
    ("systemd", "READY=1 at exec", None),
)
"""Each update's kexec.mode, what the boot after it shows, and the drop-in for luod.service
that makes it so (None: luod.service as shipped)."""
AFTER = (2, 3, 4)  # the boots after each kexec
TIMEOUT = 1200  # 3 boots took 727 s at load average 10 (two TCG guests and a fuzz run, 2 cores)
DROP_IN = "systemd/system/luod.service.d/bench.conf"
GLOBAL = [  # (label, where): phase transitions by their target, or events
    ("freeze sent", ("phase", "freezing")),
    ("all frozen", ("phase", "frozen")),
    ("kexec", ("phase", "rebooting")),
    ("kernel boot", ("event", "kernel_boot")),
    ("luod start", ("event", "luod_start")),
    ("sessions retrieved", ("event", "sessions_retrieved")),
]
PER_VM = [("freeze ack", "freeze_ack"), ("reclaimed", "reclaimed"), ("done", "done")]


def guest_files() -> dict[str, str]:
    files = {f"vmm-{vm}.env": f"RAM={ram}\n" for vm, ram in RAM.items()}
    for boot, (mode, _, drop_in) in enumerate(UPDATES, start=1):
        files[f"etc-{boot}/luod/luod.toml"] = (
            f'[kexec]\nmode = "{mode}"\nrunning_image = "/run/sdg-share/bzImage"\n'
        )
        reclaims = "".join(f"sdg-reclaim@{vm}.service\n" for vm in VMS)
        files[f"enable-{boot + 1}"] = reclaims + "sdg-stamp.service\n"
        if drop_in is not None:
            files[f"etc-{boot + 1}/{DROP_IN}"] = drop_in
    return files


def update_label(update: tuple[str, str, str | None]) -> str:
    mode, what, _ = update
    return f"{mode} kexec, {what}"


Run = tuple[list[dict[str, Any]], list[float | None], dict[str, Any]]


def run_bench(workdir: Path, timeout: float = TIMEOUT) -> Run:
    """The update records (as ``UPDATES``), from the history in the last boot, the bare
    unit's stamps of the boots they led to, and what bench.boot_breakdown collects."""
    names = (*["stage-bench-update.sh"] * len(UPDATES), "stage-bench-last.sh")
    result = guest.run(
        [(guest.HERE / name).read_text() for name in names],
        kernel=resolve_kernel(),
        root=guest.rootfs(guest.luod_deb()),
        workdir=workdir,
        files=guest_files(),
        timeout=timeout,
    ).check()
    for boot in AFTER:
        results = (result.share / f"reclaim-results-{boot}.txt").read_text().split()
        if results[1::2] != ["success"] * len(VMS):
            raise AssertionError(f"boot {boot}: reclaim units {results}")
    last = AFTER[-1]
    history = json.loads((result.share / f"history-{last}.json").read_text())["history"]
    records = [h for h in history if h["outcome"] == "completed"][-len(UPDATES) :]
    modes = [mode_of(r) for r in records]
    if modes != [mode for mode, _, _ in UPDATES]:
        raise AssertionError(f"expected updates {UPDATES}, got {modes}")
    bare = [_stamp_file(result.share / f"stamp-{boot}") for boot in AFTER]
    return records, bare, boot_breakdown.collect(result.share, AFTER, VMS)


def _stamp_file(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def mode_of(record: dict[str, Any]) -> str:
    """From the rebooting phase's reason, "kexec (direct)" or "kexec (systemd)"."""
    reason = next(p["reason"] for p in record["phases"] if p["to"] == "rebooting")
    return str(reason).removeprefix("kexec (").rstrip(")")


def stamp(record: dict[str, Any], where: tuple[str, str]) -> float | None:
    kind, name = where
    if kind == "event":
        event = record["events"].get(name)
        return epoch(event) if event else None
    for phase in record["phases"]:
        if phase["to"] == name:
            return epoch(phase["at"])
    return None


def _epoch(moment: str | None) -> float | None:
    return epoch(moment) if moment else None


def seconds(value: float | None, origin: float | None) -> str:
    return "-" if value is None or origin is None else f"{value - origin:+.3f} s"


def timeline(records: list[dict[str, Any]], bare: list[float | None]) -> str:
    origins = [stamp(r, GLOBAL[0][1]) for r in records]
    rows = [
        [label, *(seconds(stamp(r, where), o) for r, o in zip(records, origins, strict=True))]
        for label, where in GLOBAL
    ]
    rows.insert(4, ["bare unit (luod's ordering)", *map(seconds, bare, origins)])
    for vm in VMS:
        for label, name in PER_VM:
            values = [_epoch(r["vms"].get(vm, {}).get(name)) for r in records]
            rows.append(
                [f"{vm} {label}", *(seconds(v, o) for v, o in zip(values, origins, strict=True))]
            )
        blackouts = [r["blackout_seconds"].get(vm) or 0 for r in records]
        rows.append([f"{vm} blackout", *(f"{b:.3f} s" for b in blackouts)])
    header = ["step (t = 0: FREEZE sent)", *(update_label(u) for u in UPDATES)]
    return table(header, rows)


def targets(records: list[dict[str, Any]], bare: list[float | None]) -> str:
    """Issue 17 §0: kernel up -> luod serving <= 2 s, serving -> every VM reclaimed <= 1 s,
    beside the bare unit with luod's ordering (the earliest userspace can be)."""
    rows = []
    for update, record, stamp_bare in zip(UPDATES, records, bare, strict=True):
        boot = stamp(record, ("event", "kernel_boot"))
        serving = stamp(record, ("event", "sessions_retrieved"))
        reclaimed = [_epoch(v.get("reclaimed")) for v in record["vms"].values()]
        last = max((r for r in reclaimed if r is not None), default=None)
        up = _span(boot, serving)
        bare_up = _span(boot, stamp_bare)
        fan = _span(serving, last)
        rows.append(
            [
                update_label(update),
                _verdict(up, 2.0),
                "-" if bare_up is None else f"{bare_up:.3f} s",
                "-" if up is None or not bare_up else f"{up / bare_up:.2f}",
                _verdict(fan, 1.0),
            ]
        )
    header = [
        "update",
        "kernel up -> luod serving (<= 2 s)",
        "kernel up -> bare unit",
        "luod / bare",
        "serving -> all VMs reclaimed (<= 1 s)",
    ]
    return table(header, rows)


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "- MISS"
    return f"{value:.3f} s {'PASS' if value <= target else 'MISS'}"


def report() -> str:
    with tempfile.TemporaryDirectory() as workdir:
        records, bare, data = run_bench(Path(workdir))
    title = (
        "Blackout timeline: READY=1 once serving vs at exec, direct reboot(KEXEC) vs systemctl "
        "kexec (systemd 262 guest, QEMU TCG, same 3 VMs)"
    )
    return "\n\n".join(
        [
            title + "\n" + timeline(records, bare),
            targets(records, bare),
            boot_breakdown.render(records, data, AFTER),
        ]
    )


if __name__ == "__main__":
    print(report())
    sys.exit(0)
