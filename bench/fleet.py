"""Issue-18 benchmark: the collection's rolling update over 20 simulated hosts.
``python -m bench.fleet``

The fleet tier's setup (tests/fleet/harness.py: a luod on the simulator per host, two demo VMMs
each, local connections), one rollout of the playbook luod.liveupdate.rolling_update with the
role's default batches [1, 5 %, 25 %]. Measured:

- the rollout's wall time, and per batch;
- per host, the update itself (luod's record: first transition to the end of the reclaim) and
  the blackout of its VMs;
- luod's REST cost per host and update: every module call goes through a counting proxy in front
  of that host's API socket (requests, bytes each way);
- on paper, 10,000 hosts with the same batches: the batch count, and the time from the measured
  per-batch time at a given number of Ansible forks.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import median, table
from luod.rest import records
from tests.fleet.harness import Fleet, bzimage, run_playbook

HOSTS = 20
DEFAULT_BATCHES: list[int | str] = [1, "5%", "25%"]
REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|POST|PUT|DELETE|PATCH) /", re.MULTILINE)


@dataclass
class Counted:
    requests: int = 0
    sent: int = 0  # client -> luod
    received: int = 0  # luod -> client


class CountingProxy:
    """A unix socket in front of luod's API socket, counting what crosses it."""

    def __init__(self, listen: Path, upstream: Path) -> None:
        self.listen, self.upstream = listen, upstream
        self.counted = Counted()
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(str(listen))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        try:
            upstream.connect(str(self.upstream))
        except OSError:
            client.close()  # luod is rebooting: the module sees it as unreachable
            return
        back = threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True)
        back.start()
        self._pump(client, upstream, True)
        back.join()

    def _pump(self, source: socket.socket, sink: socket.socket, outgoing: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
                with self._lock:
                    if outgoing:
                        self.counted.sent += len(data)
                        self.counted.requests += len(REQUEST_LINE.findall(data))
                    else:
                        self.counted.received += len(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._server.close()


def batch_sizes(hosts: int, serial: list[int | str]) -> list[int]:
    """Ansible's batches for ``serial`` (its last value repeats; a percentage rounds down, at
    least 1)."""
    sizes, left, index = [], hosts, 0
    while left > 0:
        spec = serial[min(index, len(serial) - 1)]
        size = max(1, int(hosts * float(spec.rstrip("%")) / 100)) if isinstance(spec, str) else spec
        sizes.append(min(size, left))
        left -= sizes[-1]
        index += 1
    return sizes


def measure(root: Path) -> dict[str, Any]:
    fleet = Fleet(root, HOSTS)
    fleet.start()
    proxies = {
        host.name: CountingProxy(host.root / "counted.sock", host.api_socket)
        for host in fleet.hosts
    }
    try:
        kernel = bzimage(root / "boot" / "vmlinuz-7.3.4-fleet", "7.3.4-fleet")
        inventory = fleet.inventory(
            root / "inventory.json",
            sockets={name: proxy.listen for name, proxy in proxies.items()},
            rolling_update_kernel=str(kernel),
        )
        run = run_playbook(inventory, root / "ansible", {})
        if run.returncode != 0:
            raise AssertionError(run.output[-3000:])
        last = {h.name: records.update_record(h.history()[-1]) for h in fleet.hosts}
        return {
            "wall": run.seconds,
            "updates": [
                r.ended_at.timestamp() - r.started_at.timestamp()
                for r in last.values()
                if r.ended_at and r.started_at
            ],
            "blackouts": [b for r in last.values() for b in r.blackout_seconds.values() if b],
            "counted": [p.counted for p in proxies.values()],
            "spans": _batch_spans(fleet, batch_sizes(HOSTS, DEFAULT_BATCHES)),
        }
    finally:
        for proxy in proxies.values():
            proxy.close()
        fleet.stop()


def _batch_spans(fleet: Fleet, sizes: list[int]) -> list[float]:
    """Each batch's updates: its first update's start to its last update's end."""
    spans, start = [], 0
    for size in sizes:
        batch = [
            records.update_record(fleet.hosts[i].history()[-1]) for i in range(start, start + size)
        ]
        first = min(r.started_at.timestamp() for r in batch if r.started_at)
        spans.append(max(r.ended_at.timestamp() for r in batch if r.ended_at) - first)
        start += size
    return spans


def on_paper(round_seconds: float, host_seconds: float) -> list[list[str]]:
    """10,000 hosts, the role's batches. Ansible's linear strategy runs each task over a
    batch ``forks`` hosts at a time, so a batch takes ceil(size / forks) rounds, each as long
    as one measured batch (no larger than the forks here): facts, preflight, the update, facts,
    the gate. With a real kexec the update dominates: ``host_seconds`` is that part."""
    sizes = batch_sizes(10_000, DEFAULT_BATCHES)
    rows = []
    for forks in (5, 50, 500):
        rounds = sum(math.ceil(size / forks) for size in sizes)
        rows.append([str(forks), str(len(sizes)), str(rounds),
                     f"{rounds * round_seconds / 3600:.1f} h",
                     f"{rounds * (round_seconds - host_seconds + 60) / 3600:.1f} h"])  # fmt: skip
    return rows


def report() -> str:
    with tempfile.TemporaryDirectory(prefix="luod-bench-fleet-") as workdir:
        found = measure(Path(workdir))
    counted: list[Counted] = found["counted"]
    sizes = batch_sizes(HOSTS, DEFAULT_BATCHES)
    per_batch = median(found["spans"])
    per_host = median(found["updates"])
    wall = found["wall"]
    blackouts = found["blackouts"]
    rows = [
        ["hosts / batches", f"{HOSTS} / {len(sizes)} {sizes}"],
        ["rollout wall time", f"{wall:.1f} s ({wall / HOSTS:.2f} s per host)"],
        ["per batch (first start to last end), median", f"{per_batch:.2f} s"],
        ["per host: update (luod's record), median", f"{per_host:.2f} s"],
        ["per VM: blackout, median / max", f"{median(blackouts):.2f} / {max(blackouts):.2f} s"],
        [
            "REST requests per host and update, median / max",
            f"{median([c.requests for c in counted]):.0f} / {max(c.requests for c in counted)}",
        ],
        [
            "REST bytes per host and update (to luod / from luod), median",
            f"{median([c.sent for c in counted]) / 1024:.1f} KiB / "
            f"{median([c.received for c in counted]) / 1024:.1f} KiB",
        ],
    ]
    paper = on_paper(wall / len(sizes), per_host)
    return "\n".join(
        [
            "== fleet: luod.liveupdate.rolling_update over 20 simulated hosts",
            table(["", "measured"], rows),
            "",
            "10,000 hosts on paper (batches [1, 5 %, 25 %]; a round = one measured batch; "
            "'60 s kexec': the simulated update replaced by 60 s of real reboot):",
            table(["forks", "batches", "rounds", "time", "time, 60 s kexec"], paper),
        ]
    )


def main() -> int:
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
