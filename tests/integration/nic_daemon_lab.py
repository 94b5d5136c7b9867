"""luod's NIC wiring end to end, in a network namespace of its own (``python -m
tests.integration.nic_daemon_lab STATE_DIR``, as root): luods on the simulator and demo VMMs,
with real taps and a real bridge. One JSON line says what each scenario saw; the asserting is
done by tests/integration/test_nic_daemon.py. Nothing here touches the host's interfaces.

- ``kexec``: vm1 declares two taps on br-lab (one multi-queue), vm2 a veth (luod cannot create
  one), vm3 nothing. Update (the simulator's kexec ends luod), every device deleted as a real
  kexec deletes them, luod started again: each VMM reclaims; the devices are read again.
- ``restart``: vm1's taps survive a restart of luod (no kexec): nothing touches them. (The
  simulator's kernel does not outlive its luod, so the VM comes back "lost": the restart of a
  luod whose VMs kept their sessions is covered by tests/unit/test_nic_wiring.py.)
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from luod.net.plumbing import Plumbing
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.integration.conftest import Daemon, start_daemon
from tests.integration.net_lab import (
    DECLS,
    build_lab,
    delete,
    index,
    indexes,
    new_netns,
    vlans_supported,
)

CONFIG = '[net]\nmanaged_bridges = ["br-lab"]\n'
NICS = {"vm1": ["vm1-net0:br-lab", "vm1-net1:br-lab"], "vm2": ["vm2-veth0"], "vm3": []}


def demo_run(daemon: Daemon, vm: str, record: Path) -> subprocess.Popen[bytes]:
    nics = [arg for spec in NICS[vm] for arg in ("--nic", spec)]
    command = [sys.executable, "-m", "luod.demo.vmm", "run", "--id", vm, "--ram", "ram0=1M"]
    command += [*nics, "--record", str(record), "--socket", str(daemon.socket)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    for line in process.stdout:
        if b"handed-over" in line:
            return process
    raise AssertionError(f"demo VMM {vm} ended before handing over")


def demo_reclaim(daemon: Daemon, vm: str, record: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "luod.demo.vmm", "reclaim", "--id", vm]
    command += ["--record", str(record), "--socket", str(daemon.socket)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    said: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return said


def luoctl_vm(daemon: Daemon, vm: str) -> str:
    api = daemon.state / "run" / "api.sock"
    deadline = time.monotonic() + 20
    while not api.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    command = [sys.executable, "-m", "luod.cli.main", "--socket", str(api), "vm", vm]
    while True:  # the REST API starts a moment after the VMM socket
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done.stdout + done.stderr
        time.sleep(0.2)


def kexec(state: Path) -> dict[str, Any]:
    new_netns()
    with IPRoute() as ipr:
        build_lab(ipr, vlans_supported(ipr))
        ipr.link("add", ifname="vm2-veth0", kind="veth", peer="vm2-veth1")
    config = state / "luod.toml"
    state.mkdir(parents=True, exist_ok=True)
    config.write_text(CONFIG)
    daemon = start_daemon(state / "luod", "--config", str(config))
    vmms = [demo_run(daemon, vm, state / f"{vm}.json") for vm in NICS]
    with Plumbing({"br-lab"}) as net:
        before = net.record(DECLS).to_dict()
    image = state / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    with Client(daemon.socket) as client:
        listed = {vm["id"]: vm["nics"] for vm in client.list()}
        checks = client.update(image, dry_run=True)["checks"]
        with contextlib.suppress(Exception):  # luod's kexec ends the connection
            client.update(image, wait=True, deadlines={"freezing": 10})
    stopped = daemon.process.wait(timeout=30)
    for process in vmms:
        process.kill()
        process.wait()
    with IPRoute() as ipr:  # what a kexec does to every network device
        delete(ipr, "vm1-net0", "vm1-net1", "br-lab", "vm2-veth0")
    restarted = start_daemon(state / "luod", "--config", str(config), api=True)
    try:
        reclaimed = {vm: demo_reclaim(restarted, vm, state / f"{vm}.json") for vm in ("vm1", "vm3")}
        with Client(restarted.socket) as client:  # vm2 reclaims, is not done yet: luoctl shows it
            vm2 = client.reclaim("vm2")
            reclaimed["vm2"] = {"files": sorted(vm2), "nics": vm2.nics}
            shown = luoctl_vm(restarted, "vm2")
            for fd in vm2.values():
                fd.close()
            client.done("vm2")
            history = client.history()[-1]
    finally:
        restarted.stop()
    with Plumbing({"br-lab"}) as net:
        after = net.record(DECLS).to_dict()
    return {
        "stopped": stopped,
        "listed": listed,
        "checks": checks,
        "before": before,
        "after": after,
        "reclaimed": reclaimed,
        "luoctl": shown,
        "history": history,
        "log": (state / "luod" / "luod.log").read_text(),
    }


def restart(state: Path) -> dict[str, Any]:
    new_netns()
    with IPRoute() as ipr:
        build_lab(ipr, vlans=False)
        before = indexes(ipr)
        mtu = ipr.link("get", index=index(ipr, "vm1-net0"))[0].get_attr("IFLA_MTU")
    config = state / "luod.toml"
    state.mkdir(parents=True, exist_ok=True)
    config.write_text(CONFIG)
    daemon = start_daemon(state / "luod", "--config", str(config))
    vmm = demo_run(daemon, "vm1", state / "vm1.json")
    daemon.stop()
    restarted = start_daemon(state / "luod", "--config", str(config))
    try:
        with Client(restarted.socket) as client:
            listed = client.list()
    finally:
        restarted.stop()
        vmm.kill()
        vmm.wait()
    with IPRoute() as ipr:
        after = indexes(ipr)
        mtu_after = ipr.link("get", index=index(ipr, "vm1-net0"))[0].get_attr("IFLA_MTU")
    return {
        "before": before,
        "after": after,
        "mtu": [mtu, mtu_after],
        "listed": listed,
        "log": (state / "luod" / "luod.log").read_text(),
    }


def main() -> None:
    state = Path(sys.argv[1])
    scenario = sys.argv[2]
    result = kexec(state) if scenario == "kexec" else restart(state)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
