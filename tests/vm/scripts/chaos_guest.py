"""The guest side of the chaos matrix (tests/vm/test_chaos.py): one Python process per boot
(each Python start costs seconds under TCG) drives luod (keeper custody, persistent state),
the demo VMMs and the kills, and leaves snapshots in SHARE/points (chaos_sessions).
``python -m tests.vm.scripts.chaos_guest BOOT SHARE STATE KERNEL``.

Boot 1: luod is killed with SIGKILL in every phase before the reboot (test holds,
luod.core.holds, stop it exactly there) and restarted; each time every VMM reconnects and gets
RESUME. Then an update kexecs. Boot 2: killed before it retrieved any session, then with half
the VMs reclaimed; fresh VMs and a later update. Boot 3: those come back; then the keeper is
killed, then luod; an update kexecs. Boot 4: the VM of boot 3 comes back."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from luod.demo import vmm as demo
from luod.vmm.client import Client
from tests.vm.scripts.chaos_sessions import snapshot

SOCK = "/run/luod/liveupdate.sock"
KEEPER_LOCK = Path("/run/luod/keeper.sock.lock")  # holds the keeper's pid
VMMS = {  # id -> mode, answer to FREEZE, RAM
    "vm-a": ("handover", "ready", ["--ram", "ram0=16M", "--ram", "state=4K"]),
    "vm-b": ("handover", "ready", ["--ram", "ram0=8M"]),
    "vm-c": ("delegation", "ready", ["--ram", "ram0=8M"]),
    "vm-s": ("handover", "ignore", ["--ram", "ram0=4M"]),  # never answers FREEZE
    "vm-d": ("handover", "ready", ["--ram", "ram0=8M"]),
    "vm-e": ("delegation", "ready", ["--ram", "ram0=8M"]),
    "vm-k": ("handover", "ready", ["--ram", "ram0=8M"]),
}
HOLDS = {  # the points before the reboot, in order, and the test hold that stops luod there
    "preparing": "preparing",
    "prepared": "prepared",
    "freezing": "",  # none: vm-s never answers FREEZE
    "frozen": "frozen",
    "reboot": "reboot",
}


class Guest:
    def __init__(self, share: Path, state: Path, kernel: str, points: list[str]) -> None:
        self.share, self.state, self.kernel, self.selected = share, state, kernel, points
        self.points = share / "points"
        self.points.mkdir(exist_ok=True)
        self.luod: subprocess.Popen[bytes] | None = None
        self.vmms: dict[str, subprocess.Popen[bytes]] = {}
        self.tag = ""

    # --- luod ------------------------------------------------------------------------------
    def launch_luod(self, tag: str, hold: str = "") -> None:
        """luod as deployed here (keeper custody, persistent state dir), without waiting."""
        env = {**os.environ, "LUOD_TEST_HOLD": hold}
        self.tag = tag
        config = ["--config", "/run/luod-vm.toml", "--state-dir", str(self.state)]
        with open(self.share / f"luod-{tag}.log", "ab") as log:
            self.luod = subprocess.Popen(
                ["luod", *config, "--custody", "keeper", "--no-api"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def start_luod(self, tag: str, hold: str = "") -> None:
        self.launch_luod(tag, hold)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                Client(SOCK).close()
                return
            time.sleep(0.1)
        sys.exit(f"luod {tag} did not come up")

    def kill_luod(self) -> None:
        assert self.luod is not None
        self.luod.send_signal(signal.SIGKILL)
        self.luod.wait()

    def update(self, *, wait: bool = False) -> None:
        if wait:
            os.sync()
        with Client(SOCK) as client:
            client.update(self.kernel, wait=wait, deadlines={"freezing": 120})
        if wait:
            sys.exit("the update returned instead of kexecing")

    # --- VMMs ------------------------------------------------------------------------------
    def start_vmms(self, *vms: str) -> None:
        for vm in vms:
            mode, on_freeze, ram = VMMS[vm]
            command = ["luod-demo-vmm", "run", "--id", vm, "--mode", mode]
            with open(self.share / f"{vm}-run.log", "ab") as log:
                self.vmms[vm] = subprocess.Popen(
                    [*command, "--on-freeze", on_freeze, *ram, "--record", self.record(vm)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        for vm in vms:
            self.wait_for(f"{vm}-run.log", "handed-over" if VMMS[vm][0] == "handover" else "sub")

    def stop_vmm(self, vm: str) -> None:
        """It stops for good (its digests recorded); luod keeps its VM."""
        process = self.vmms.pop(vm)
        process.terminate()
        process.wait()

    def reclaim(self, *vms: str) -> None:
        """``luod-demo-vmm reclaim`` in this process: RAM back, every sha256 checked, DONE."""
        for vm in vms:
            log = open(self.share / f"{vm}-reclaim.log", "w")  # noqa: SIM115
            with log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                demo.main(["reclaim", "--id", vm, "--record", self.record(vm)])

    def record(self, vm: str) -> str:
        return str(self.share / f"{vm}.json")

    def wait_for(self, name: str, word: str, times: int = 1, limit: float = 300) -> None:
        path = self.share / name
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                if path.read_text().count(word) >= times:
                    return
            except OSError:  # not written yet, or ENODATA: 9p read it mid-append; read again
                pass
            time.sleep(0.1)
        sys.exit(f"timed out waiting for {times} x {word!r} in {name}")

    # --- the boots -------------------------------------------------------------------------
    def boot1(self) -> None:
        points = [p for p in HOLDS if p in self.selected]
        holds = [HOLDS[p] for p in points[1:]] + [""]  # the next point's, set at each restart
        self.start_luod("1", HOLDS[points[0]] if points else "")
        self.start_vmms("vm-a", "vm-b", "vm-c", "vm-s")
        for n, (point, next_hold) in enumerate(zip(points, holds, strict=True), start=1):
            if point in ("frozen", "reboot") and "vm-s" in self.vmms:
                self.stop_vmm("vm-s")  # from now on every VMM answers FREEZE
            self.update()
            if point == "freezing":  # vm-a, vm-b, vm-c paused, vm-s still running
                for vm in ("vm-a", "vm-b", "vm-c"):
                    self.wait_for(f"{vm}-run.log", '"frozen"')
                self.wait_for("vm-s-run.log", "ignoring-freeze")
            else:
                self.wait_for(f"luod-{self.tag}.log", "test-hold")
            self.kill_luod()
            self.start_luod(point, next_hold)
            for vm in self.vmms:
                self.wait_for(f"{vm}-run.log", "reconnected", n)
                self.wait_for(f"{vm}-run.log", '"resumed"', n)
            snapshot(self.points, point)
        if "vm-s" in self.vmms:
            self.stop_vmm("vm-s")
        self.update(wait=True)

    def boot2(self) -> None:
        self.launch_luod("2-held", "recovery")
        self.wait_for("luod-2-held.log", "test-hold")
        snapshot(self.points, "before-retrieve-held", held_only=True)
        self.kill_luod()
        self.start_luod("before-retrieve")
        snapshot(self.points, "before-retrieve")
        self.reclaim("vm-a", "vm-c")
        snapshot(self.points, "reclaiming-half", held_only=True)
        self.kill_luod()
        self.start_luod("reclaiming")
        snapshot(self.points, "reclaiming-restart")
        self.reclaim("vm-b", "vm-s")
        snapshot(self.points, "reclaiming")
        self.start_vmms("vm-d", "vm-e")
        self.update(wait=True)

    def boot3(self) -> None:
        self.start_luod("3")
        self.reclaim("vm-d", "vm-e")
        snapshot(self.points, "later")
        if "keeper" not in self.selected:
            return
        self.start_vmms("vm-k")
        os.kill(int(KEEPER_LOCK.read_text().split()[0]), signal.SIGKILL)
        time.sleep(3)  # luod notices that its keeper is gone
        snapshot(self.points, "keeper-killed", held_only=True)
        self.kill_luod()
        self.start_luod("keeper")
        self.wait_for("vm-k-run.log", "reconnected")
        snapshot(self.points, "keeper")
        self.update(wait=True)

    def boot4(self) -> None:
        self.start_luod("4")
        self.reclaim("vm-k")
        snapshot(self.points, "keeper-after")


if __name__ == "__main__":
    boot, share, state, kernel, points = sys.argv[1:6]
    guest = Guest(Path(share), Path(state), kernel, points.split(","))
    getattr(guest, f"boot{boot}")()
