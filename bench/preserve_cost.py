"""Where a PRESERVE through luod spends its time, beside the raw ioctl, in one run.

Four measures per size (medians), each a superset of the one before:
1. raw: PRESERVE_FD on a session, in this process (luod.kernel);
2. core: ``Registry.preserve`` in this process: the raw ioctl plus what luod does around it
   (memfd inspection, the ownership checks, the one journal line per request, the log line);
3. floor: a round trip to the cheapest daemon there is (a blocking Python loop: one frame and
   the fd in by SCM_RIGHTS, one line out), plus the raw ioctl: what any userspace agent costs;
4. luod: the PRESERVE request through luod's socket (luod.vmm.client to a luod subprocess);
5. batched: per file, when a VMM hands BATCH files over in one PRESERVE request.

``luod - floor`` is what luod adds over a minimal agent, ``core - raw`` its bookkeeping.
"""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from bench import handover
from bench.stats import human, median, signed, table, timed
from luod.core.access import Peer
from luod.core.model import FileSpec, Mode
from luod.daemon import logs
from luod.daemon.daemon import Daemon
from luod.daemon.settings import Settings
from luod.kernel import Backend, kernel_backend
from luod.kernel.sim import sim_backend
from luod.vmm.client import Client
from tests.contract.harness import sim_kernel

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
SIZES = {"4 KiB": (4096, 200), "64 MiB": (64 * MIB, 6)}
BATCH = 16
BATCH_MAX_BYTES = 64 * MIB
SOL = socket.SOL_SOCKET
REQUEST = b'{"cmd":"PRESERVE","id":"vm","files":[{"name":"ram0","kind":"memfd"}],"seq":1}\n'


def batched_samples(workdir: Path, size: int, rounds: int, real_kernel: bool) -> list[float]:
    """Per file, BATCH files handed over in one PRESERVE request (one round trip, one journal
    line, for all of them). Small files only (BATCH_MAX_BYTES a request): the files stay
    preserved until the end, and 3 x 16 x 64 MiB do not fit the 2 GiB test guest."""
    if size * BATCH > BATCH_MAX_BYTES:
        return []
    with (
        handover.daemon(workdir / f"batch-{size}", "--no-api", real_kernel=real_kernel) as path,
        Client(path) as client,
    ):
        client.register("vm-batch")
        samples = []
        for index in range(max(rounds // BATCH, 3)):
            fds = [handover.filled(size) for _ in range(BATCH)]
            files = {f"ram{index}-{n}": fd for n, fd in enumerate(fds)}
            samples.append(timed(partial(client.preserve, "vm-batch", files)) / BATCH)
            for fd in fds:
                fd.close()
        client.drop("vm-batch")
    return samples


def quiet_logs() -> None:
    """luod's JSON log lines, rendered as the daemon renders them, into /dev/null."""
    saved, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 (kept for the logger)
    try:
        logs.configure("info")
    finally:
        sys.stderr = saved


def core_samples(state: Path, size: int, rounds: int, real_kernel: bool) -> list[float]:
    settings = (
        Settings(state_dir=state, runtime_dir=state / "run", custody="memory")
        if real_kernel
        else Settings.simulated(state)
    )
    daemon = Daemon(settings)
    daemon.startup()
    registry, peer = daemon.registry, Peer(0, 0, os.getpid())
    registry.register(peer, "vm-core", Mode.HANDOVER)
    samples = []
    for index in range(rounds):
        fd = handover.filled(size)
        spec = [FileSpec(f"ram{index}")]
        samples.append(timed(partial(registry.preserve, peer, "vm-core", spec, [fd])))
    registry.drop(peer, "vm-core")
    daemon.shutdown()
    return samples


def serve_floor(path: str) -> None:
    """The cheapest agent: accept one client; per frame take the fd, fstat it, answer."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".new")
    listener.listen(1)
    os.replace(path + ".new", path)  # appears once it accepts
    conn, _ = listener.accept()
    room = socket.CMSG_SPACE(4 * array.array("i").itemsize)
    while True:
        data, ancillary, _, _ = conn.recvmsg(65536, room)
        if not data:
            return
        for _, _, payload in ancillary:
            for fd in array.array("i", payload[: len(payload) - len(payload) % 4]):
                os.fstat(fd)
                os.close(fd)
        json.loads(data)
        conn.sendall(b'{"ok":true,"seq":1,"files":[{"name":"ram0","token":1}]}\n')


def floor_samples(workdir: Path, size: int, rounds: int) -> list[float]:
    path = str(workdir / f"floor-{size}.sock")
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.preserve_cost", "floor", path], cwd=REPO
    )
    try:
        handover.wait_for_socket(Path(path))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            samples = []
            for _ in range(rounds):
                with handover.filled(size) as fd:
                    rights = [
                        (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd.fileno()]))
                    ]
                    samples.append(timed(partial(_round_trip, client, rights)))
    finally:
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    return samples


def _round_trip(client: socket.socket, rights: list[tuple[int, int, array.array[int]]]) -> None:
    client.sendmsg([REQUEST], rights)
    reply = client.recv(65536)
    json.loads(reply)


def measure(workdir: Path, real_kernel: bool = False) -> dict[str, dict[str, float]]:
    """Per size: the medians of raw, core, floor (round trip + raw) and luod."""
    quiet_logs()
    backend: Backend = kernel_backend() if real_kernel else sim_backend(workdir / "raw")
    through = handover.preserve_samples(workdir, SIZES, real_kernel, extra=("--no-api",))
    result = {}
    for label, (size, rounds) in SIZES.items():
        raws, vias = through[label]
        raw = median(handover.raw_preserve(backend, size, rounds) + raws)
        core = median(core_samples(workdir / f"core-{size}", size, rounds, real_kernel))
        trip = median(floor_samples(workdir, size, rounds))
        batch = median(batched_samples(workdir, size, rounds, real_kernel))
        result[label] = {
            "raw": raw,
            "core": core,
            "floor": trip + raw,
            "luod": median(vias),
            "batched": batch,
        }
    if not real_kernel:
        sim_kernel(backend).close()
    return result


def rows(where: str, measures: dict[str, dict[str, float]]) -> list[list[str]]:
    out = []
    for label, m in measures.items():
        raw = m["raw"]
        out.append(
            [
                f"{where}: {label}",
                human(raw),
                f"{human(m['core'])} ({m['core'] / raw:.2f})",
                f"{human(m['floor'])} ({m['floor'] / raw:.2f})",
                f"{human(m['luod'])} ({m['luod'] / raw:.2f})",
                signed(m["luod"] - m["floor"]),
                batched_text(m["batched"], raw),
            ]
        )
    return out


def batched_text(batched: float, raw: float) -> str:
    return "-" if batched != batched else f"{human(batched)} ({batched / raw:.2f})"  # NaN: none


def report() -> str:
    """The simulator on this host; the same measures on the real kernel, in the VM, are
    bench.vm_targets' (one guest run with its other in-VM targets)."""
    with tempfile.TemporaryDirectory() as tmp:
        table_rows = rows("sim (host)", measure(Path(tmp)))
    header = [
        "PRESERVE (median)",
        "raw",
        "core (/raw)",
        "floor (/raw)",
        "luod (/raw)",
        "luod-floor",
        f"luod, {BATCH} per request (/raw)",
    ]
    return "Where a PRESERVE's time goes (see bench/preserve_cost.py)\n" + table(header, table_rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["floor"]:
        serve_floor(sys.argv[2])
    elif sys.argv[1:2] == ["guest"]:
        with tempfile.TemporaryDirectory() as tmp:
            Path(sys.argv[2]).write_text(json.dumps(measure(Path(tmp), real_kernel=True)))
    else:
        print(report())
