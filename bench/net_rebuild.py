"""Rebuilding VM network plumbing after a kexec: luod.net.rebuild against ip(8), side by side.

10 VMs x 2 taps (one multi-queue with a vnet header, one single-queue; each owned by its VM's
uid, with a MAC, an MTU, on a bridge, up), in a network namespace of the run's own. Each round
rebuilds every VM from its record with luod (one rtnetlink socket, the rebuild's own reading
and verification included) and makes the same devices with ``ip tuntap add`` + ``ip link set
... master ... up`` (one command each per tap), in alternating order, deleting the taps in
between. Measured on this host and in the QEMU/TCG guest of the VM tests (the target, <= 5 ms
per tap, is for the guest). ``daemon`` is the same rebuild through the path luod's daemon takes
after the reboot (luod.daemon.nics.rebuild_all: a fresh rtnetlink socket per reboot, each VM's
report posted as it is done): per VM, the part of that VM's blackout that the network adds
(its ``nics_rebuilt`` step in the update's record).

``python -m bench.net_rebuild measure`` runs the rounds in the current namespace (run it under
``unshare --net``) and prints one JSON line; ``report()`` runs it on both and prints the table.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import resource
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import human, table

VMS = 10
ROUNDS = 5
BRIDGE = "br-bench"
TARGET = 0.005
REPO = Path(__file__).resolve().parents[1]
# <linux/if_tun.h> (x86_64 ioctl numbers), <linux/rtnetlink.h>, <linux/if_link.h>
TUNSETIFF, TUNSETPERSIST, TUNSETOWNER = 0x400454CA, 0x400454CB, 0x400454CC
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE = 0x0002, 0x1000, 0x4000, 0x0100
NETLINK_ROUTE, RTM_NEWLINK, NLM_F_REQUEST_ACK, IFF_UP = 0, 16, 0x1 | 0x4, 0x1
IFLA_ADDRESS, IFLA_MTU, IFLA_IFNAME, IFLA_MASTER = 1, 4, 3, 10


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


def daemon_round(records: list[Any]) -> tuple[list[float], bool]:
    """luod.daemon.nics.rebuild_all on every VM's record, timed per VM from its post."""
    from luod.daemon.nics import rebuild_all

    posted: list[tuple[float, dict[str, Any]]] = []
    todo = {f"vm{vm}": record for vm, record in enumerate(records)}
    started = time.perf_counter()
    rebuild_all(todo, (), lambda vm, report: posted.append((time.perf_counter(), report)))
    stamps = [started] + [at for at, _ in posted]
    exact = len(posted) == VMS and all(r["exact"] for _, r in posted)
    return [b - a for a, b in itertools.pairwise(stamps)], exact


def ip_round() -> list[float]:
    return timed_per_vm(ip_rebuild)


def floor_round() -> list[float]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as rtnl:
        bridge = socket.if_nametoindex(BRIDGE)
        return timed_per_vm(lambda vm: floor_rebuild(rtnl, bridge, vm))


def timed_per_vm(rebuild_vm: Callable[[int], None]) -> list[float]:
    per_vm = []
    for vm in range(VMS):
        started = time.perf_counter()
        rebuild_vm(vm)
        per_vm.append(time.perf_counter() - started)
    return per_vm


def floor_rebuild(rtnl: socket.socket, bridge: int, vm: int) -> None:
    """The kernel's share, as a reference: the tun ioctls, then one hand-packed RTM_NEWLINK
    (MAC, MTU, master, up) per tap; no reading, no checking, no error report."""
    for tap in taps(vm):
        fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE | IFF_VNET_HDR if tap["mq"] else 0)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap["name"].encode(), flags))
            fcntl.ioctl(fd, TUNSETOWNER, tap["uid"])
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        finally:
            os.close(fd)
        attrs = _nla(IFLA_IFNAME, tap["name"].encode() + b"\0")
        attrs += _nla(IFLA_ADDRESS, bytes.fromhex(tap["mac"].replace(":", "")))
        attrs += _nla(IFLA_MTU, struct.pack("I", tap["mtu"]))
        attrs += _nla(IFLA_MASTER, struct.pack("I", bridge))
        body = struct.pack("BxHiII", 0, 0, 0, IFF_UP, IFF_UP) + attrs
        rtnl.send(
            struct.pack("IHHII", 16 + len(body), RTM_NEWLINK, NLM_F_REQUEST_ACK, vm, 0) + body
        )
        error = struct.unpack_from("i", rtnl.recv(4096), 16)[0]
        if error:
            raise OSError(-error, f"RTM_NEWLINK {tap['name']}")


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("HH", size, kind) + payload + b"\0" * (-size % 4)


ROUND_OF: dict[str, Callable[[], list[float]] | None] = {
    "luod": None,  # luod_round and daemon_round take the records
    "daemon": None,
    "ip": ip_round,
    "floor": floor_round,
}


def measure() -> dict[str, Any]:
    started = time.perf_counter()
    from luod.net.iproute import iproute_class
    from luod.net.plumbing import Plumbing

    iproute = iproute_class()
    imported = time.perf_counter() - started
    with iproute() as ipr:
        records = setup(ipr)
        delete_taps(ipr)
        opened = time.perf_counter()
        net = Plumbing()
        opened = time.perf_counter() - opened
        result: dict[str, Any] = {side: [] for side in ROUND_OF} | {"steps": [], "exact": True}
        result |= {f"{side}_cpu": [] for side in ROUND_OF}
        with net:
            for round_ in range(ROUNDS):
                for side in rotated(list(ROUND_OF), round_):
                    cpu = cpu_seconds()
                    if side == "luod":
                        per_vm, in_steps, ok = luod_round(net, records)
                        result["steps"].append(in_steps)
                        result["exact"] &= ok
                    elif side == "daemon":
                        per_vm, ok = daemon_round(records)
                        result["exact"] &= ok
                    else:
                        round_of = ROUND_OF[side]
                        assert round_of is not None
                        per_vm = round_of()
                    result[f"{side}_cpu"].append(cpu_seconds() - cpu)
                    result[side].append(per_vm)
                    delete_taps(ipr)
    return result | {"import": imported, "open": opened, "imports": import_sides()}


IMPORTS = {  # pyroute2's IPRoute in a fresh interpreter that has asyncio already, as luod has
    "luod": "from luod.net.iproute import iproute_class; iproute_class()",
    "whole": "from pyroute2 import IPRoute",
}


def import_sides() -> dict[str, list[float]]:
    """Seconds to import IPRoute luod's way (luod.net.iproute) and with pyroute2's whole
    package, ROUNDS fresh interpreters each, interleaved."""
    seconds: dict[str, list[float]] = {side: [] for side in IMPORTS}
    for round_ in range(ROUNDS):
        for side in rotated(list(IMPORTS), round_):
            code = (
                "import asyncio, time; started = time.perf_counter(); "
                f"{IMPORTS[side]}; print(time.perf_counter() - started)"
            )
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
            )
            seconds[side].append(float(done.stdout.split()[-1]))
    return seconds


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its waited-for children (ip): unlike
    the wall clock, barely moved by other work on the machine."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def rotated(sides: list[str], shift: int) -> list[str]:
    """Each round begins with another side: none always runs first (or last)."""
    shift %= len(sides)
    return sides[shift:] + sides[:shift]


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Medians over the rounds: per tap (a round's total / taps), per VM, per 20 taps."""
    out: dict[str, float] = {}
    for side in ROUND_OF:
        totals = [sum(per_vm) for per_vm in result[side]]
        out[f"{side}_tap"] = statistics.median(totals) / (2 * VMS)
        out[f"{side}_vm"] = statistics.median(v for per_vm in result[side] for v in per_vm)
        out[f"{side}_all"] = statistics.median(totals)
        out[f"{side}_cpu"] = statistics.median(result[f"{side}_cpu"]) / (2 * VMS)
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
    lines = [("per tap", "tap", target + exact), ("per VM (2 taps)", "vm", "-")]
    lines += [(f"{VMS} VMs x 2 taps", "all", "-"), ("CPU time per tap", "cpu", "-")]
    body = [
        [f"{where}: {label}", *(human(s[f"{side}_{key}"]) for side in ROUND_OF),
         f"{s[f'ip_{key}'] / s[f'daemon_{key}']:.1f}x", goal]
        for label, key, goal in lines
    ]  # fmt: skip
    body.append([f"{where}: of which luod's steps (create, configure), per tap",
                 human(s["steps_tap"]), "-", "-", "-", "-", "-"])  # fmt: skip
    body.append([f"{where}: once: import pyroute2's IPRoute + open socket",
                 human(result["import"] + result["open"]), "-", "-", "-", "-", "-"])  # fmt: skip
    lean, whole = (statistics.median(result["imports"][side]) for side in IMPORTS)
    body.append([f"{where}: that import, luod's way / pyroute2 whole (fresh process)",
                 f"{human(lean)} / {human(whole)} ({lean / whole:.2f})",
                 "-", "-", "-", "-", "-"])  # fmt: skip
    per_vm = per_vm_medians(result["daemon"])
    body.append([f"{where}: daemon path, each VM's part (vm0..vm{VMS - 1})",
                 "-", " ".join(human(v) for v in per_vm), "-", "-", "-", "-"])  # fmt: skip
    if target != "-":
        daemon_tap = s["daemon_tap"]
        verdict = "PASS" if daemon_tap <= TARGET else "MISS"
        body.append([f"{where}: daemon path per tap vs {human(TARGET)}", "-", human(daemon_tap),
                     "-", "-", "-", verdict])  # fmt: skip
    return body


def per_vm_medians(rounds: list[list[float]]) -> list[float]:
    return [statistics.median(per_vm[vm] for per_vm in rounds) for vm in range(VMS)]


def report() -> str:
    body = rows("host", host_result(), "-")
    if os.environ.get("LUOD_BENCH_NO_VM") != "1":
        body += rows("TCG guest", guest_result(), f"<= {human(TARGET)}")
    header = ["rebuild (median of rounds)", "luod.net", "luod daemon", "ip(8) baseline",
              "kernel floor", "ip/daemon", "target"]  # fmt: skip
    title = (
        f"NIC rebuild after a kexec: {VMS} VMs x 2 taps on a bridge, {ROUNDS} rounds\n"
        "(kernel floor: raw tun ioctls + one hand-packed RTM_NEWLINK per tap, no reading)"
    )
    return title + "\n" + table(header, body)


if __name__ == "__main__":
    if sys.argv[1:] == ["measure"]:
        print(json.dumps(measure()))
    else:
        print(report())
