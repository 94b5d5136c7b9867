"""Rebuilding VM network plumbing after a kexec: luod.net.rebuild against ip(8), side by side.

10 VMs x 2 taps (one multi-queue with a vnet header, one single-queue; each owned by its VM's
uid, with a MAC, an MTU, on a bridge, up), in a network namespace of the run's own. Each round
rebuilds every VM from its record with luod (one rtnetlink socket, the rebuild's own reading
and verification included) and makes the same devices with ``ip tuntap add`` + ``ip link set
... master ... up`` (one command each per tap), in alternating order, deleting the taps in
between. Measured on this host and in the QEMU/TCG guest of the VM tests (the target, <= 5 ms
per tap, is for the guest).

``python -m bench.net_rebuild measure`` runs the rounds in the current namespace (run it under
``unshare --net``) and prints one JSON line; ``report()`` runs it on both and prints the table.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import human, table

VMS = 10
ROUNDS = 5
BRIDGE = "br-bench"
TARGET = 0.005
REPO = Path(__file__).resolve().parents[1]


def taps(vm: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"vm{vm}-net{n}",
            "uid": 1000 + vm,
            "mq": n == 0,
            "mac": f"52:54:00:00:{vm:02x}:{n:02x}",
            "mtu": 1500,
        }
        for n in range(2)
    ]


def ip_rebuild(vm: int) -> None:
    """The baseline: what an operator's script (or libvirt's helper) runs for one VM."""
    for tap in taps(vm):
        extra = ["multi_queue", "vnet_hdr"] if tap["mq"] else []
        ip("tuntap", "add", "dev", tap["name"], "mode", "tap", "user", str(tap["uid"]), *extra)
        ip(
            "link",
            "set",
            "dev",
            tap["name"],
            "address",
            tap["mac"],
            "mtu",
            str(tap["mtu"]),
            "master",
            BRIDGE,
            "up",
        )


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True)


def setup(ipr: Any) -> list[Any]:
    """The bridge, the taps made once, and each VM's record of them."""
    from luod.core.nic import NicDecl
    from luod.net.plumbing import Plumbing

    ipr.link("add", ifname=BRIDGE, kind="bridge")
    ipr.link("set", index=ipr.link_lookup(ifname=BRIDGE)[0], state="up")
    for vm in range(VMS):
        ip_rebuild(vm)
    with Plumbing() as net:
        return [net.record([NicDecl(t["name"], BRIDGE) for t in taps(vm)]) for vm in range(VMS)]


def delete_taps(ipr: Any) -> None:
    for vm in range(VMS):
        for tap in taps(vm):
            ipr.link("del", ifname=tap["name"])


def luod_round(net: Any, records: list[Any]) -> tuple[list[float], float, bool]:
    """Seconds per VM; of them, the seconds in the steps (create, configure); all exact?"""
    per_vm, steps, exact = [], 0.0, True
    for record in records:
        started = time.perf_counter()
        report = net.rebuild(record)
        per_vm.append(time.perf_counter() - started)
        steps += sum(device.seconds for device in report.devices)
        exact &= report.exact and all(d.status == "rebuilt" for d in report.devices)
    return per_vm, steps, exact


def ip_round() -> list[float]:
    per_vm = []
    for vm in range(VMS):
        started = time.perf_counter()
        ip_rebuild(vm)
        per_vm.append(time.perf_counter() - started)
    return per_vm


def measure() -> dict[str, Any]:
    started = time.perf_counter()
    from pyroute2 import IPRoute

    from luod.net.plumbing import Plumbing

    imported = time.perf_counter() - started
    with IPRoute() as ipr:
        records = setup(ipr)
        delete_taps(ipr)
        opened = time.perf_counter()
        net = Plumbing()
        opened = time.perf_counter() - opened
        luod, steps, baseline, exact = [], [], [], True
        with net:
            for round_ in range(ROUNDS):
                for side in ("luod", "ip") if round_ % 2 == 0 else ("ip", "luod"):
                    if side == "luod":
                        per_vm, in_steps, ok = luod_round(net, records)
                        luod.append(per_vm)
                        steps.append(in_steps)
                        exact &= ok
                    else:
                        baseline.append(ip_round())
                    delete_taps(ipr)
    return {
        "luod": luod,
        "steps": steps,
        "ip": baseline,
        "exact": exact,
        "import": imported,
        "open": opened,
    }


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Medians over the rounds: per tap (a round's total / taps), per VM, per 20 taps."""
    out: dict[str, float] = {}
    for side in ("luod", "ip"):
        totals = [sum(per_vm) for per_vm in result[side]]
        out[f"{side}_tap"] = statistics.median(totals) / (2 * VMS)
        out[f"{side}_vm"] = statistics.median(v for per_vm in result[side] for v in per_vm)
        out[f"{side}_all"] = statistics.median(totals)
    out["steps_tap"] = statistics.median(result["steps"]) / (2 * VMS)
    return out


def host_result() -> dict[str, Any]:
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "bench.net_rebuild", "measure"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=600,
    )
    return dict(json.loads(done.stdout.splitlines()[-1]))


def guest_result() -> dict[str, Any]:
    from tests.vm.qemu import resolve_kernel, run_guest

    python = shlex.quote(sys.executable)
    stage = (
        f"cd {shlex.quote(str(REPO))} && unshare --net {python} -m bench.net_rebuild measure"
        ' > "$LUOD_VM_SHARE/net.out" && tail -n 1 "$LUOD_VM_SHARE/net.out" >'
        ' "$LUOD_VM_SHARE/net.json"'
    )
    with tempfile.TemporaryDirectory() as workdir:
        kernel = resolve_kernel()
        result = run_guest([stage], kernel=kernel, timeout=600, workdir=Path(workdir)).check()
        return dict(json.loads((result.share / "net.json").read_text()))


def rows(where: str, result: dict[str, Any], target: str) -> list[list[str]]:
    s = summary(result)
    exact = "" if result["exact"] else " (NOT exact: see the rebuild report)"
    return [
        [
            f"{where}: per tap",
            human(s["luod_tap"]),
            human(s["ip_tap"]),
            f"{s['ip_tap'] / s['luod_tap']:.1f}x",
            target + exact,
        ],
        [
            f"{where}: per VM (2 taps)",
            human(s["luod_vm"]),
            human(s["ip_vm"]),
            f"{s['ip_vm'] / s['luod_vm']:.1f}x",
            "-",
        ],
        [
            f"{where}: {VMS} VMs x 2 taps",
            human(s["luod_all"]),
            human(s["ip_all"]),
            f"{s['ip_all'] / s['luod_all']:.1f}x",
            "-",
        ],
        [
            f"{where}: of which create + configure steps, per tap",
            human(s["steps_tap"]),
            "-",
            "-",
            "-",
        ],
        [
            f"{where}: once: import pyroute2 + open socket",
            human(result["import"] + result["open"]),
            "-",
            "-",
            "-",
        ],
    ]


def report() -> str:
    body = rows("host", host_result(), "-")
    if os.environ.get("LUOD_BENCH_NO_VM") != "1":
        body += rows("TCG guest", guest_result(), f"<= {human(TARGET)}")
    header = ["rebuild (median of rounds)", "luod.net", "ip(8) baseline", "ip/luod", "target"]
    title = f"NIC rebuild after a kexec: {VMS} VMs x 2 taps on a bridge, {ROUNDS} rounds"
    return title + "\n" + table(header, body)


if __name__ == "__main__":
    if sys.argv[1:] == ["measure"]:
        print(json.dumps(measure()))
    else:
        print(report())
