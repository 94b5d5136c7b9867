"""How many VMMs of this host start at once: a slot per CPU, held from just after a VMM's
interpreter starts until its VM runs (after a kexec: reclaimed, QEMU started, state loaded,
``cont``).

After a live update every VMM starts together with luod, and each VM stays paused until its own
VMM has restored it. When more VMMs start than there are CPUs, they share them: every one of
them finishes late, together, where in turns the first would be back after one start and only
the last after all of them. On the test guest's 2 TCG vCPUs sharing also costs several times the
CPU (every switch between processes refills TCG's software TLB; bench/NOTES.md, "The blackout
budget of real QEMU VMs"). A slot is a lock file under a directory all of the host's VMMs share;
``flock`` locks go with the process, so a VMM that dies never keeps its slot.

The gate only ever delays a start, and never for long: a VMM that finds no free slot within
``wait`` seconds (a slot's holder hangs, say) starts anyway, and one whose directory is unusable
starts at once (``take`` says why in ``Slot.note``). Imports nothing but the standard library's
smallest modules: it runs before a VMM's own imports, the part of its start it gates.

Settings, from the environment (an init that starts many VMMs sets them once):
``LUOD_VMM_START_SLOTS`` (default: the CPUs this process may run on; 0: no gate) and
``LUOD_VMM_START_WAIT`` (seconds, default ``WAIT``).
"""

from __future__ import annotations

import fcntl
import os
import time

TYPE_CHECKING = False  # typing's own would import typing, ~2 ms before the gate (mypy: True)
if TYPE_CHECKING:
    from collections.abc import Mapping

SLOTS_ENV = "LUOD_VMM_START_SLOTS"
WAIT_ENV = "LUOD_VMM_START_WAIT"
WAIT = 60.0
POLL = 0.05
"""Between two looks at the slots while all are taken: each look is a few system calls, and ten
waiting VMMs cost a TCG guest 2 % of a start at this rate (bench/NOTES.md)."""


class Slot:
    """The one owner of a held slot's lock fd (or of none: ``held`` False, and ``note`` says
    why the start was not gated). ``release()`` lets the next VMM start; closing on exit does
    too."""

    def __init__(self, fd: int | None, index: int | None, waited: float, note: str) -> None:
        self._fd = fd
        self.index = index
        self.waited = waited
        self.note = note

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the lock goes with the last fd of its open file

    def describe(self) -> dict[str, object]:
        """For the VMM's log line: which slot, how long it waited, or why there was none."""
        if self.index is None:
            return {"gated": False, "note": self.note}
        return {"gated": True, "slot": self.index, "waited": round(self.waited, 3)}


def settings(environ: Mapping[str, str] = os.environ) -> tuple[int, float]:
    """(slots, wait) from the environment; a value that is not a number is ignored (the
    defaults hold), as a gate must never keep a VM from starting."""
    slots, wait = _int(environ.get(SLOTS_ENV)), _float(environ.get(WAIT_ENV))
    return (
        cpus() if slots is None or slots < 0 else slots,
        WAIT if wait is None or wait < 0 else wait,
    )


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except OSError:
        return os.cpu_count() or 1


def take(directory: str, slots: int, wait: float = WAIT, poll: float = POLL) -> Slot:
    """A free slot of ``slots`` under ``directory`` (made if missing), waiting for one at most
    ``wait`` seconds; a Slot that holds none when there is no gate, no usable directory, or no
    slot came free in time."""
    if slots <= 0:
        return Slot(None, None, 0.0, "no gate (0 slots)")
    try:
        fds = _open_slots(directory, slots)
    except OSError as exc:
        return Slot(None, None, 0.0, f"no gate: {directory}: {exc.strerror or exc}")
    began = time.monotonic()
    first = os.getpid() % slots  # VMMs starting at once try different slots first
    order = [(first + i) % slots for i in range(slots)]
    while True:
        for index in order:
            if _locked(fds[index]):
                _close_all(fds, keep=index)
                return Slot(fds[index], index, time.monotonic() - began, "")
        waited = time.monotonic() - began
        if waited >= wait:
            _close_all(fds)
            return Slot(None, None, waited, f"no slot free after {waited:.1f} s: started anyway")
        time.sleep(min(poll, max(wait - waited, 0.0)))


def _open_slots(directory: str, slots: int) -> list[int]:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fds: list[int] = []
    try:
        for index in range(slots):
            path = os.path.join(directory, f"vmm-start-{index}.lock")
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            fds.append(os.open(path, flags, 0o600))
    except OSError:
        _close_all(fds)
        raise
    return fds


def _locked(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _close_all(fds: list[int], keep: int | None = None) -> None:
    for index, fd in enumerate(fds):
        if index != keep:
            os.close(fd)


def _int(text: str | None) -> int | None:
    try:
        return int(text or "")
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text or "")
    except ValueError:
        return None
