"""A fleet of simulated hypervisor hosts on this machine, for the Ansible collection's tiers.

Each host is a luod on the simulator (``luod --simulate HOST_DIR``: its own state dir, VMM
socket and REST socket) with a few demo VMMs that keep writing into their "guest RAM". A
simulated kexec ends that luod (the simulator writes the preserved memory into the state dir and
luod exits); the host's supervisor then plays the machine rebooting: the old kernel's VMMs die
with it, a new luod starts on the same state dir (it takes the sessions back), each VMM reclaims
its memory and verifies every sha256 against what it recorded at FREEZE (``luod-demo-vmm
reclaim``), then runs its VM again and hands it over for the next update.

Faults for the rollout tests are extra VMs: one registered but never preserved (preflight
refuses: ``handover``), one whose VMM ignores FREEZE (the update aborts at the freezing
deadline). Clearing a fault stops its process and drops its VM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from luod.vmm.client import Client
from tests import bzimages

PYTHON = sys.executable
START_LIMIT = 60.0
VMM_INTERVAL = "0.25"  # seconds between the demo guests' writes (and event polls)
STUCK_VM = """
import sys, time
from luod.vmm.client import Client
client = Client(sys.argv[1])
client.register(sys.argv[2])
print("registered", flush=True)
time.sleep(1e6)
"""


def bzimage(path: Path, release: str) -> Path:
    """A synthetic bzImage whose header names ``release`` (kernel_version at 0x20E, relative to
    0x200), as a real one does: the simulator boots that release after the kexec."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # with the ABI of the simulator's kernel, so luod's handover-abi preflight passes
    path.write_bytes(bzimages.bzimage(replace(bzimages.B_7_3, release=release)))
    return path


def wait_until(condition: Any, what: str, limit: float = START_LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class SimHost:
    """One simulated hypervisor and its supervisor thread (the machine that reboots)."""

    name: str
    root: Path
    vms: list[str]
    luod: subprocess.Popen[bytes] | None = None
    vmms: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    faults: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    boots: int = 0
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def api_socket(self) -> Path:
        return self.root / "run" / "api.sock"

    @property
    def vmm_socket(self) -> Path:
        return self.root / "run" / "liveupdate.sock"

    def log(self, vm: str, boot: int | None = None) -> Path:
        return self.root / "logs" / f"{vm}.boot{self.boots if boot is None else boot}.log"

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self._boot()
        self._run_vmms()
        self._thread = threading.Thread(target=self._supervise, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._kill(list(self.vmms.values()) + list(self.faults.values()))
        if self.luod is not None and self.luod.poll() is None:
            self.luod.send_signal(signal.SIGTERM)
            try:
                self.luod.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.luod.kill()
                self.luod.wait()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _boot(self, after_kexec: bool = False) -> None:
        """Start luod on this host's state dir; wait for its VMM and REST sockets (after a
        kexec the VMM socket only: luod starts REST once its VMs are back, or 5 s later)."""
        self.boots += 1
        for sock in (self.vmm_socket, self.api_socket):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
        command = [PYTHON, "-m", "luod", "--simulate", str(self.root)]
        with open(self.root / "logs" / f"luod.boot{self.boots}.log", "ab") as log:
            self.luod = subprocess.Popen(
                [*command, "--custody", "memory", "--log-level", "warning"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_until(lambda: self._sockets_up(after_kexec), f"{self.name}'s luod (boot {self.boots})")

    def _sockets_up(self, vmm_only: bool = False) -> bool:
        assert self.luod is not None
        if self.luod.poll() is not None:
            raise AssertionError(f"{self.name}'s luod exited: {self.luod.returncode}")
        return self.vmm_socket.exists() and (vmm_only or self.api_socket.exists())

    def _run_vmms(self) -> None:
        for vm in self.vms:
            self.vmms[vm] = self._demo(vm, "run", "--ram", "ram0=256K")
        for vm in self.vms:
            wait_until(lambda vm=vm: "handed-over" in self._read(self.log(vm)), f"{vm} handed over")

    def _demo(self, vm: str, *args: str) -> subprocess.Popen[bytes]:
        command = [PYTHON, "-m", "luod.demo.vmm", *args, "--id", vm]
        command += ["--socket", str(self.vmm_socket), "--record", str(self.root / f"{vm}.json")]
        if args[0] == "run":
            command += ["--interval", VMM_INTERVAL]
        with open(self.log(vm), "ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    # --- the machine ---------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.is_set():
            assert self.luod is not None
            code = self.luod.wait()
            if self._stopping.is_set():
                return
            if (self.root / "kernel" / "handover" / "handover.json").exists():
                try:
                    self._reboot()
                except Exception as exc:  # the test sees it in problems
                    self.problems.append(f"reboot {self.boots}: {exc!r}")
                    return
            else:
                self.problems.append(f"luod exited with {code} without a kexec")
                return

    def _reboot(self) -> None:
        """The kexec: the old kernel's processes are gone; the new kernel's luod starts, each
        VMM reclaims and verifies its memory, then runs its VM again."""
        self._kill(list(self.vmms.values()) + list(self.faults.values()))
        self.vmms.clear()
        self.faults.clear()
        self._boot(after_kexec=True)
        for vm in self.vms:
            done = subprocess.run(
                [PYTHON, "-m", "luod.demo.vmm", "reclaim", "--id", vm,
                 "--socket", str(self.vmm_socket), "--record", str(self.root / f"{vm}.json")],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            lines = done.stdout.strip().splitlines()
            verdict = json.loads(lines[-1]) if lines else {"event": "none", "stderr": done.stderr}
            self.verdicts.append({"boot": self.boots, **verdict})
        wait_until(self._sockets_up, f"{self.name}'s REST API (boot {self.boots})")
        self._run_vmms()

    @staticmethod
    def _kill(processes: list[subprocess.Popen[bytes]]) -> None:
        for process in processes:
            if process.poll() is None:
                process.kill()
        for process in processes:
            process.wait()

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text()
        except FileNotFoundError:
            return ""

    # --- faults --------------------------------------------------------------------------------
    def add_stuck_vm(self, vm: str) -> None:
        """A VM registered but never preserved: luod's preflight refuses (handover)."""
        process = subprocess.Popen(
            [PYTHON, "-c", STUCK_VM, str(self.vmm_socket), vm],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None and b"registered" in process.stdout.readline()
        self.faults[vm] = process

    def add_stubborn_vmm(self, vm: str) -> None:
        """A VMM that hands its RAM over and never answers FREEZE."""
        self.faults[vm] = self._demo(vm, "run", "--ram", "ram0=64K", "--on-freeze", "ignore")
        wait_until(lambda: "handed-over" in self._read(self.log(vm)), f"{vm} handed over")

    def clear_faults(self) -> None:
        self._kill(list(self.faults.values()))
        with Client(self.vmm_socket) as client:
            for vm in self.faults:
                client.drop(vm)
        self.faults.clear()

    # --- what the tests look at ----------------------------------------------------------------
    def history(self) -> list[dict[str, Any]]:
        path = self.root / "history.jsonl"
        return [json.loads(line) for line in self._read(path).splitlines() if line]

    def vm_states(self) -> dict[str, str]:
        with Client(self.vmm_socket) as client:
            return {vm["id"]: vm["state"] for vm in client.list()}

    def said(self, vm: str, event: str) -> bool:
        """Whether ``vm``'s VMM printed ``event`` in this boot."""
        return f'"event": "{event}"' in self._read(self.log(vm))


class Fleet:
    """``size`` simulated hosts h01..hNN under ``root``, each with ``vms`` demo VMMs."""

    def __init__(self, root: Path, size: int, vms: int = 2) -> None:
        self.root = root
        self.hosts = [
            SimHost(f"h{n:02d}", root / f"h{n:02d}", [f"h{n:02d}-vm{v}" for v in range(vms)])
            for n in range(1, size + 1)
        ]

    def __getitem__(self, name: str) -> SimHost:
        return next(host for host in self.hosts if host.name == name)

    def start(self) -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(SimHost.start, self.hosts))

    def stop(self) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(SimHost.stop, self.hosts))

    def problems(self) -> list[str]:
        return [f"{host.name}: {p}" for host in self.hosts for p in host.problems]

    def inventory(self, path: Path, sockets: dict[str, Path] | None = None, **group: Any) -> Path:
        """An Ansible inventory: every host local, its own luod socket as a host variable."""
        hosts = {
            host.name: {
                "rolling_update_socket": str((sockets or {}).get(host.name, host.api_socket))
            }
            for host in self.hosts
        }
        group_vars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": PYTHON,
            **group,
        }
        path.write_text(json.dumps({"hypervisors": {"hosts": hosts, "vars": group_vars}}))
        return path


@dataclass
class PlaybookRun:
    """What ansible-playbook did: its exit code, wall time, every task result per host (the
    fleet_record callback) and its human output."""

    returncode: int
    seconds: float
    results: list[dict[str, Any]]
    stats: dict[str, dict[str, int]]
    output: str

    def reached(self) -> set[str]:
        return set(self.stats)

    def failed(self) -> set[str]:
        return {h for h, s in self.stats.items() if s.get("failures") or s.get("unreachable")}

    def hosts(self, task: str, status: str = "ok", changed: bool | None = None) -> set[str]:
        """Hosts where the task whose name ends with ``task`` ended with ``status``."""
        return {
            r["host"]
            for r in self.results
            if r["task"].endswith(task)
            and r["status"] == status
            and (changed is None or r["changed"] == changed)
        }

    def result(self, host: str, task: str) -> dict[str, Any]:
        return next(r for r in self.results if r["host"] == host and r["task"].endswith(task))


REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "packaging"


def ansible_env(workdir: Path) -> dict[str, str]:
    """Ansible from this venv, the collection from the source tree, nothing from $HOME."""
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{Path(PYTHON).parent}:{os.environ.get('PATH', '')}",
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_HOME": str(workdir / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(workdir / "ansible-remote-tmp"),
        "ANSIBLE_CALLBACK_PLUGINS": str(Path(__file__).resolve().parent / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "fleet_record",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_FORKS": "10",
        "ANSIBLE_PIPELINING": "1",  # no module file written, chmod-ed and removed per task
    }


def run_playbook(
    inventory: Path, workdir: Path, extra: dict[str, Any], playbook: str = "rolling_update"
) -> PlaybookRun:
    record = workdir / f"record-{time.monotonic_ns()}.jsonl"
    env = {**ansible_env(workdir), "FLEET_RECORD": str(record)}
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(PYTHON).parent / "ansible-playbook"), "-i", str(inventory),
         "-e", json.dumps(extra), f"luod.liveupdate.{playbook}"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    lines = [json.loads(line) for line in SimHost._read(record).splitlines() if line]
    stats: dict[str, dict[str, int]] = next(
        (line["stats"] for line in lines if "stats" in line), {}
    )
    results = [line for line in lines if "stats" not in line]
    return PlaybookRun(done.returncode, seconds, results, stats, done.stdout + done.stderr)
