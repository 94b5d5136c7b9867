"""Human output of luoctl: pure functions from API documents to lines of text.

(``--json`` prints the documents themselves.) Unknown phases, states, steps and outcomes are
shown as they come: luod may add some, and an old luoctl must still say something useful.
"""

from __future__ import annotations

import time
from typing import Any

from luod.cli import blackout as parts
from luod.cli.moments import epoch

SYMBOL = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL"}


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def clock(moment: str | None) -> str:
    """Local wall time of an API time (luod's clock: luoctl never stamps with its own)."""
    return clock_of(epoch(moment) if moment else None)


def clock_of(realtime: float | None) -> str:
    if realtime is None:
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(realtime)) + f".{int(realtime % 1 * 1000):03d}"


def since(moment: str | None, now: float | None = None) -> str:
    """How long ago an API time was, in whole units (luod's time against this host's)."""
    if not moment:
        return "-"
    seconds = max(0.0, (now if now is not None else time.time()) - epoch(moment))
    for unit, size_ in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size_:
            return f"{seconds / size_:.0f} {unit}"
    return f"{seconds:.0f} s"


def local_time(moment: str | None) -> str:
    if not moment:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch(moment)))


def status(doc: dict[str, Any]) -> list[str]:
    return _status_lines(doc)


def _status_lines(doc: dict[str, Any]) -> list[str]:
    luo = "yes" if doc["luo_supported"] else "NO (no /dev/liveupdate)"
    return [
        f"host      {doc['host']}",
        f"kernel    {doc['kernel']} (LUO: {luo}; live updates so far: {doc['liveupdate_number']})",
        f"phase     {doc['phase']}",
        f"VMs       {doc['vms']} ({doc['sessions']} sessions, {doc['files']} files, "
        f"{size(doc['preserved_bytes'])} preserved)",
        f"luod      {doc['version']} (backend {doc['backend']})",
    ]


def checks(doc: dict[str, Any]) -> list[str]:
    """One line per check; the messages start in one column, past the longest id."""
    lines = []
    width = max([12, *(len(check["id"]) for check in doc["checks"])]) + 1
    for check in doc["checks"]:
        lines.append(f"{SYMBOL.get(check['status'], check['status'])}  {check['id']:<{width}}"
                     f"{check['message']}")  # fmt: skip
        if check["status"] != "pass" and check.get("hint"):
            lines.append(f"      {'':<{width}}hint: {check['hint']}")
    verdict = "preflight passed" if doc.get("ok", True) else "preflight REFUSES this update"
    return [*lines, verdict]


def vms(doc: dict[str, Any]) -> list[str]:
    rows = [
        [
            vm["id"],
            vm["mode"],
            vm["state"],
            liveness(vm),
            str(vm["owner_uid"]),
            str(len(vm["files"])),
            size(sum(f["size"] for f in vm["files"])),
        ]
        for vm in doc["vms"]
    ]
    if not rows:
        return ["no VMs"]
    return table(rows, ["ID", "MODE", "STATE", "VMM", "OWNER", "FILES", "SIZE"])


def liveness(vm: dict[str, Any]) -> str:
    """Its VMM's connection: ``connected``, or ``gone 5 min`` (since it disconnected)."""
    if "connected" not in vm:
        return "-"  # an older luod
    if vm["connected"]:
        return "connected"
    return f"gone {since(vm.get('disconnected_since'))}"


def nics(doc: dict[str, Any]) -> list[str]:
    """The VM's declared NICs, and after a kexec whether they came back (and what did not)."""
    declared = [
        n["name"] + (f" on {n['bridge']}" if n.get("bridge") else "") for n in doc.get("nics", [])
    ]
    lines = [f"nics      {', '.join(declared)}"] if declared else []
    net = doc.get("net")
    if net:
        state = "pending" if net.get("pending") else "ready" if net["ready"] else "NOT READY"
        lines.append(f"network   {state}{'' if net['exact'] else ', not exactly as recorded'}")
        lines += [f"  problem {problem}" for problem in net.get("problems", [])]
    return lines


def vm(doc: dict[str, Any]) -> list[str]:
    lines = [
        f"VM        {doc['id']} ({doc['mode']}, {doc['state']})",
        f"owner     uid {doc['owner_uid']}",
        f"VMM       {_vmm_line(doc)}",
        f"session   {doc['session']}",
    ]
    if doc.get("note"):
        lines.append(f"note      {doc['note']}")
    for name, why in sorted(doc.get("rejected", {}).items()):
        lines.append(f"refused   {name}: {why}")
    lines += nics(doc)
    rows = [
        [f["name"], f["kind"], size(f["size"]), str(f["token"]), "yes" if f["reclaimed"] else "no"]
        for f in doc["files"]
    ]
    return [*lines, "", *table(rows, ["FILE", "KIND", "SIZE", "TOKEN", "RECLAIMED"])]


def _vmm_line(doc: dict[str, Any]) -> str:
    if doc.get("connected", True):
        return liveness(doc)
    return f"disconnected since {local_time(doc.get('disconnected_since'))}"


def dropped(doc: dict[str, Any]) -> list[str]:
    released = doc["released"]
    forced = " (forced)" if doc.get("forced") else ""
    return [
        f"dropped VM {doc['id']}{forced}: released session {released['session']}, "
        f"{released['files']} files, {size(released['bytes'])}"
    ]


def glance(doc: dict[str, Any]) -> list[str]:
    """``luoctl status``: the host, its VMs by state and liveness, the update."""
    status, vms_, state = doc["status"], doc["vms"], doc["update"]
    by_state: dict[str, int] = {}
    for vm in vms_:
        by_state[vm["state"]] = by_state.get(vm["state"], 0) + 1
    gone = sum(1 for vm in vms_ if vm.get("connected") is False)
    counts = ", ".join(f"{n} {name}" for name, n in sorted(by_state.items())) or "none"
    lines = _status_lines(status)
    lines.insert(3, f"VM states {counts}" + (f"; {gone} with their VMM gone" if gone else ""))
    return [*lines, *update_state(state)]


def update_state(doc: dict[str, Any], split: bool = False) -> list[str]:
    """The running update (phase, elapsed), or the last one's outcome; ``split``: where each
    VM's blackout went (``update show``; ``status`` keeps the totals)."""
    record = doc.get("update")
    if record is None:
        return [f"update    none yet (phase {doc['phase']})"]
    kernel = record["request"]["kernel"]
    more = [f"          {line}" for line in [*abi(record), *blackout(record, split)]]
    if record["outcome"] == "running":
        elapsed = since(record.get("started_at"))
        return [f"update    {record['id']} {doc['phase']} for {elapsed} -> {kernel}", *more]
    reason = f": {record['reason']}" if record.get("reason") else ""
    by = f" (by {record['aborted_by']})" if record.get("aborted_by") else ""
    when = local_time(record.get("ended_at"))
    return [f"last      update {record['id']} {record['outcome']}{by} at {when}{reason}", *more]


def started(record: dict[str, Any]) -> list[str]:
    return [
        f"update {record['id']} started: next kernel {record['request']['kernel']}",
        "follow it with: luoctl update watch (or wait for it: luoctl update wait)",
    ]


def ended(record: dict[str, Any] | None) -> list[str]:
    if record is None:
        return ["no update"]
    reason = f": {record['reason']}" if record.get("reason") else ""
    by = f" (by {record['aborted_by']})" if record.get("aborted_by") else ""
    headline = f"update {record['id']} {record['outcome']}{by}{reason}"
    return [headline, *abi(record), *blackout(record, split=True)]


def abi(record: dict[str, Any]) -> list[str]:
    """The handover-abi check as the update saw it, and the operator's override."""
    seen = record.get("request", {}).get("handover_abi")
    if not seen:
        return []
    override = " (OVERRIDDEN by the operator)" if seen.get("override") else ""
    return [f"handover ABI {seen['status']}{override}: {seen['message']}"]


def blackout(record: dict[str, Any], split: bool = False) -> list[str]:
    """Per VM, freeze ack to done after the reboot: what the guests lived through; with
    ``split``, where it went too, when luod stamped every step (luod.cli.blackout)."""
    measured = {vm: s for vm, s in record.get("blackout_seconds", {}).items() if s is not None}
    if not measured:
        return []
    rows = parts.rows(record, measured) if split else None
    if rows is None:
        lines = [f"  {vm:<20}{seconds:.3f} s" for vm, seconds in sorted(measured.items())]
        longest = f"  {'longest':<20}{max(measured.values()):.3f} s"
        return ["blackout per VM:", *lines, longest, *uplink(record)]
    rows.append(["longest", f"{max(measured.values()):.3f} s"] + [""] * len(parts.STEPS))
    lines = [f"  {line}" for line in table(rows, parts.header())]
    return ["blackout per VM:", *lines, *parts.legend(), *uplink(record)]


def uplink(record: dict[str, Any]) -> list[str]:
    """When the host's uplink had carrier again, counted from the new kernel's boot."""
    events, link = record.get("events", {}), record.get("request", {}).get("uplink")
    boot, up = events.get("kernel_boot"), events.get("uplink_up")
    if not (link and boot and up):
        return []
    after = epoch(up) - epoch(boot)
    return [f"host uplink {link} up {after:.3f} s after the new kernel booted"]


def event(name: str, data: dict[str, Any]) -> list[str]:
    """One line per event of ``luoctl update watch``."""
    if name == "STATE":
        update = data.get("update")
        if data["phase"] == "idle":
            last = f" (last: update {update['id']} {update['outcome']})" if update else ""
            return [f"phase idle: no update is running{last}; waiting for one"]
        running = f", update {update['id']} -> {update['request']['kernel']}" if update else ""
        return [f"phase {data['phase']}{running}"]
    if name == "PHASE":
        why = f" ({data['reason']})" if data.get("reason") else ""
        return [f"{clock(data.get('at'))}  phase {data['from']} -> {data['to']}{why}"]
    if name == "VM_PROGRESS":
        note = f" ({data['note']})" if data.get("note") else ""
        return [f"{clock(data.get('at'))}  {data['id']}: {data['step']}{note}"]
    if name == "UPDATE_END":
        reason = f": {data['reason']}" if data.get("reason") else ""
        return [f"update {data['id']} {data['outcome']}{reason}"]
    return [f"{name} {data}"]


def history(doc: dict[str, Any]) -> list[str]:
    """The updates in ``doc`` (as luoctl assembles them: oldest first, a log)."""
    rows = []
    for record in doc["history"]:
        measured = [s for s in record.get("blackout_seconds", {}).values() if s is not None]
        rows.append(
            [
                local_time(record.get("ended_at")),
                record["id"],
                record["outcome"],
                record["request"]["kernel"],
                f"{max(measured):.3f} s" if measured else "-",
                _abi_cell(record),
                record.get("reason", ""),
            ]
        )
    if not rows:
        return ["no updates yet"]
    return table(rows, ["FINISHED", "ID", "OUTCOME", "KERNEL", "BLACKOUT", "ABI", "REASON"])


def _abi_cell(record: dict[str, Any]) -> str:
    seen = record.get("request", {}).get("handover_abi") or {}
    return "override" if seen.get("override") else str(seen.get("status", "-"))


def problem(doc: dict[str, Any]) -> list[str]:
    lines = [f"luoctl: {doc.get('detail') or doc.get('title', 'error')} [{doc.get('code')}]"]
    for error in doc.get("errors") or []:
        lines.append(f"  {error['field']}: {error['message']}")
    failed = [c for c in doc.get("checks") or [] if c["status"] == "fail"]
    for check in failed:
        lines.append(f"  FAIL {check['id']}: {check['message']}")
    if doc.get("hint") and not failed:  # with checks, the hint repeats them
        lines.append(f"hint: {doc['hint']}")
    for check in failed:
        if check.get("hint"):
            lines.append(f"hint: {check['id']}: {check['hint']}")
    return lines
