"""A ``luod --simulate`` subprocess for the fuzz targets, and the outcome checks made on it:
open fds and RSS before and after, tracebacks in its JSON log, and a well-behaved VMM
(luod.vmm.client) completing a simulated update afterwards (kexec, restart, reclaim, DONE)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from luod.errors import LuodError
from luod.kernel import memfd
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.fuzz.outcome import Outcome, fd_count, rss_bytes, scan_log
from tests.integration.conftest import Daemon, start_daemon

RSS_SLACK = 32 << 20
"""RSS may grow this much over a run: the allocator keeps pages of the largest lines and
replies it handled (70 KB lines, MB-size history reads), which is not a leak."""
SCRATCH_ENV = "LUOD_FUZZ_SCRATCH"
"""Where a target puts luod's state: ``python -m tests.fuzz`` sets it to a directory of its own
that it removes once the target ends."""


def scratch_dir() -> str | None:
    """The target's scratch parent: SCRATCH_ENV, else /dev/shm (manifests are rewritten
    often), else the default temp directory."""
    return os.environ.get(SCRATCH_ENV) or ("/dev/shm" if os.path.isdir("/dev/shm") else None)


FD_SETTLE = 10.0  # seconds for luod's fd table to return to its size once the peers are gone
GUEST = b"well-behaved guest memory " * 1000
AFTER_DEADLINES = {"freezing": 30, "frozen": 300}
"""The well-behaved update's deadlines: generous, as it checks luod still works, not its timing."""


AS_LIMIT = 4 << 30
"""luod's address space under fuzzing: a luod that reads /dev/zero as a kernel image (issue 13
finding 2) fails with MemoryError instead of taking the machine's memory."""


def start(state: Path, *extra: str, api: bool = False) -> Daemon:
    daemon = start_daemon(state, *extra, api=api)
    resource.prlimit(daemon.process.pid, resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    return daemon


def stop(daemon: Daemon) -> None:
    """SIGTERM, then SIGKILL for a luod that does not end (one stuck in open() of a FIFO)."""
    try:
        daemon.stop()
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        daemon.process.wait()


def baseline(daemon: Daemon) -> tuple[int, int]:
    """fds and RSS of an idle luod that has answered a client once (lazy imports done) and
    journaled a change (luod keeps its journal open from the first: core.statedir.AppendFile)."""
    with Client(daemon.socket, timeout=10) as client:
        client.status()
        client.list()
        client.register("fuzz-baseline")
        client.drop("fuzz-baseline")
    return settled_fds(daemon, None), rss_bytes(daemon.process.pid)


def settled_fds(daemon: Daemon, target: int | None) -> int:
    """luod's fd count once it stops changing (or reaches ``target``) within FD_SETTLE."""
    deadline = time.monotonic() + FD_SETTLE
    last = fd_count(daemon.process.pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = fd_count(daemon.process.pid)
        if now == target or (target is None and now == last):
            return now
        last = now
    return last


def drop_all(daemon: Daemon, outcome: Outcome) -> None:
    """Every VM the fuzzing left behind is dropped, as its VMM would (what luod holds for it
    goes back): a DROP that fails is noted."""
    with Client(daemon.socket, timeout=30) as client:
        for vm in client.list():
            try:
                client.drop(vm["id"])
            except LuodError as exc:
                outcome.notes.append(f"DROP {vm['id']} ({vm.get('state')}): {exc.code}")


def finish(daemon: Daemon, outcome: Outcome, before: tuple[int, int]) -> None:
    """fds and RSS after (the fuzzing peers gone, their VMs dropped), the log scanned, then a
    well-behaved update; luod has ended by the time this returns."""
    if daemon.alive():
        drop_all(daemon, outcome)
        outcome.fds = (before[0], settled_fds(daemon, before[0]))
        outcome.rss = (before[1], rss_bytes(daemon.process.pid))
        outcome.update_after = well_behaved_update(daemon)
    scan_log(daemon.log, outcome)


def well_behaved_update(daemon: Daemon) -> str:
    """A VMM registers and preserves its RAM and answers FREEZE with READY; an operator
    updates (the simulated kexec ends luod); luod starts again on the same state and the VMM
    reclaims its RAM, byte for byte, then says DONE; the update's history says completed.
    Returns "completed" or what went wrong."""
    image = daemon.state / "next-bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    try:
        with Client(daemon.socket, timeout=30) as vmm, memfd.create("ram0", len(GUEST)) as ram:
            os.pwrite(ram.fileno(), GUEST, 0)
            vmm.register("well-behaved")
            vmm.preserve("well-behaved", {"ram0": ram})
            freeze = threading.Thread(target=_ready_on_freeze, args=(vmm,), daemon=True)
            freeze.start()
            with Client(daemon.socket, timeout=60) as operator:
                # the frozen phase holds luod's sync(2) of the whole host: on a machine busy
                # writing (other jobs), 30 s were seen to pass, and luod rightly called it off
                reply = operator.update(image, wait=True, deadlines=AFTER_DEADLINES)
                record = reply.get("update") or {}
                said = f"{record.get('outcome')}: {record.get('reason')}"
                return f"the update ended without a kexec ({said})"[:500]
    except (LuodError, OSError):
        pass  # the kexec ended luod while the operator waited
    try:
        if (code := daemon.process.wait(timeout=30)) != 0:
            return f"luod exited {code} at the kexec"
        again = start(daemon.state)
        try:
            with Client(again.socket, timeout=30) as vmm:
                files = vmm.reclaim("well-behaved")
                with files["ram0"] as ram:
                    if os.pread(ram.fileno(), len(GUEST), 0) != GUEST:
                        return "guest memory differs after the update"
                vmm.done("well-behaved")
            return _last_update_end(again)
        finally:
            again.stop()  # its log is the same file, scanned by finish
    except (LuodError, OSError, subprocess.TimeoutExpired, AssertionError) as exc:
        return f"{type(exc).__name__}: {exc}"[:500]


def _last_update_end(daemon: Daemon) -> str:
    """The outcome of the last update luod logged (its JSON log: not HISTORY, whose reply the
    fuzzing may have made too long to send, issue 13 finding 11)."""
    deadline = time.monotonic() + 5
    while True:
        ends = [
            entry.get("outcome")
            for line in daemon.log.read_text(errors="replace").splitlines()
            if line.startswith("{") and (entry := _json(line)).get("event") == "update-end"
        ]
        if (ends and ends[-1] == "completed") or time.monotonic() > deadline:
            return str(ends[-1]) if ends else "no update-end logged"
        time.sleep(0.1)


def _json(line: str) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def _ready_on_freeze(vmm: Client) -> None:
    with contextlib.suppress(LuodError, OSError):
        while (event := vmm.wait_event(timeout=60)) is not None:
            if event.name == "FREEZE":
                vmm.ready("well-behaved")
                return
