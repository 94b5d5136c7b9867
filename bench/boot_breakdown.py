"""Where the systemd guest's time goes after a kexec (bench/systemd_blackout.py), measured:
systemd's own unit timestamps (CLOCK_MONOTONIC, i.e. seconds since the new kernel started,
written by tests/vm/systemd/lib.sh ``unit_times``), luod's update record, the demo VMMs' own
stamps (``reclaiming`` once started and imported, ``got-memory`` once RECLAIM answered), and,
warm in the same guest (``python_times``), what ``python3 -c pass`` and ``import luod.main``
cost and luod's costliest imports.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.stats import table
from luod.cli.moments import epoch

UNIT_PROPS = (
    "InactiveExitTimestampMonotonic",
    "ExecMainStartTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
)


def collect(share: Path, boots: tuple[int, ...], vms: tuple[str, ...]) -> dict[str, Any]:
    """What the share holds, as plain data (the share is a temporary directory)."""
    stamps = {vm: _vmm_stamps(share / f"{vm}-reclaim.log") for vm in vms}
    return {
        "units": {boot: _unit_times(share / f"unit-times-{boot}.txt") for boot in boots},
        # the reclaim logs are appended to at every boot: the Nth stamp is the Nth reclaim
        "vmms": {
            boot: {vm: (stamps[vm][n] if n < len(stamps[vm]) else {}) for vm in vms}
            for n, boot in enumerate(boots)
        },
        "python": _python_times(share / f"python-times-{boots[-1]}.txt"),
        "imports": top_imports(_read(share / f"importtime-{boots[-1]}.txt")),
    }


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _unit_times(path: Path) -> dict[str, dict[str, float]]:
    """unit -> property -> seconds since the kernel started (unset timestamps left out)."""
    found: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        unit, prop, *value = line.split()
        if value and value[0].isdigit() and int(value[0]) > 0:
            found.setdefault(unit, {})[prop] = int(value[0]) / 1e6
    return found


def _vmm_stamps(path: Path) -> list[dict[str, float]]:
    """Per reclaim (in boot order): {"reclaiming": epoch, "got-memory": epoch}."""
    reclaims: list[dict[str, float]] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "reclaiming":
            reclaims.append({"reclaiming": float(event["at"])})
        elif event.get("event") == "got-memory" and reclaims:
            reclaims[-1]["got-memory"] = float(event["at"])
    return reclaims


def _python_times(path: Path) -> dict[str, float]:
    """Median seconds per code run (``code|uptime before|uptime after`` lines)."""
    spans: dict[str, list[float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.count("|") != 2:
            continue
        code, before, after = line.split("|")
        spans.setdefault(code, []).append(float(after) - float(before))
    return {code: statistics.median(values) for code, values in spans.items()}


def top_imports(traced: str, count: int = 8) -> list[tuple[str, float]]:
    """What the module under ``-X importtime`` imports itself (one level down), costliest
    (cumulative) first, in seconds."""
    found = []
    for line in traced.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if (len(name) - len(name.lstrip())) // 2 == 1:
                found.append((name.strip(), int(parts[1]) / 1e6))
    return sorted(found, key=lambda item: -item[1])[:count]


def _span(values: list[float]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.2f} s" if high - low < 0.005 else f"{low:.2f}-{high:.2f} s"


def _unit(units: dict[str, dict[str, float]], name: str, prop: str) -> list[float]:
    value = units.get(name, {}).get(prop)
    return [] if value is None else [value]


def rows_for(record: dict[str, Any], data: dict[str, Any], boot: int) -> list[list[float]]:
    """The steps of one boot, each a list of seconds since the kernel started (one per VM for
    the VMMs' steps), in the order of ``STEPS``."""
    units, vmms = data["units"].get(boot, {}), data["vmms"].get(boot, {})
    kernel = epoch(record["events"]["kernel_boot"])

    def since(moment: float) -> float:  # realtime -> seconds since the kernel started
        return moment - kernel

    reclaims = [f"sdg-reclaim@{vm}.service" for vm in vmms]
    exec_ = "ExecMainStartTimestampMonotonic"
    return [
        _unit(units, "manager", "UserspaceTimestampMonotonic"),
        _unit(units, "sdg-stamp.service", exec_),
        _unit(units, "systemd-remount-fs.service", "ActiveEnterTimestampMonotonic"),
        _unit(units, "luod.service", exec_),
        [since(epoch(record["events"]["luod_start"]))],
        [since(epoch(record["events"]["sessions_retrieved"]))],
        _unit(units, "luod.service", "ActiveEnterTimestampMonotonic"),
        [v for unit in reclaims for v in _unit(units, unit, exec_)],
        [since(s["reclaiming"]) for s in vmms.values() if "reclaiming" in s],
        [since(epoch(v["reclaimed"])) for v in record["vms"].values() if v.get("reclaimed")],
        [since(s["got-memory"]) for s in vmms.values() if "got-memory" in s],
    ]


STEPS = (
    "PID 1 (systemd) starts",
    "bare unit runs (luod's ordering)",
    "systemd-remount-fs done (luod's implicit After=, from StateDirectory=)",
    "luod exec'd",
    "luod imported, its Daemon built (luod_start)",
    "luod: sessions retrieved, serving",
    "luod.service active (READY=1: at exec when socket-activated)",
    "VMM units exec'd",
    "VMMs started and imported: RECLAIM sent",
    "luod handled each RECLAIM",
    "VMMs have their memory (reply read)",
)


def render(records: list[dict[str, Any]], data: dict[str, Any], boots: tuple[int, ...]) -> str:
    steps = [rows_for(r, data, b) for r, b in zip(records, boots, strict=True)]
    rows = [[label, *(_span(s[i]) for s in steps)] for i, label in enumerate(STEPS)]
    header = ["s after the new kernel started", *(f"boot {b}" for b in boots)]
    text = "Where the time goes (systemd's unit timestamps, luod's record, the VMMs' stamps)\n"
    text += table(header, rows)
    python, imports = data["python"], data["imports"]
    if python:
        text += "\nwarm, same guest: " + ", ".join(
            f"python3 -c {code!r} {value:.2f} s" for code, value in python.items()
        )
    if imports:
        text += "\nluod.main's costliest imports (-X importtime, cumulative): "
        text += ", ".join(f"{name} {cost:.2f} s" for name, cost in imports)
    return text
