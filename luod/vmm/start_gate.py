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
MAX_SLOTS = 1024  # a lock file each
POLL = 0.05
"""Between two looks at the slots while all are taken: each look is a few system calls, and ten
waiting VMMs cost a TCG guest 2 % of a start at this rate (bench/NOTES.md)."""


class Slot:
    """The one owner of a held slot's lock fd (or of none: ``held`` False, and ``note`` says
    why the start was not gated). ``release()`` lets the next VMM start; closing on exit does
    too. ``ignored``: settings that were not used (``settings``), said with the slot."""

    def __init__(
        self,
        fd: int | None,
        index: int | None,
        waited: float,
        note: str,
        directory: str,
        ignored: tuple[str, ...] = (),
    ) -> None:
        self._fd = fd
        self.index = index
        self.waited = waited
        self.note = note
        self.directory = directory
        self.ignored = ignored

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the lock goes with the last fd of its open file

    def describe(self) -> dict[str, object]:
        """For the VMM's log line: which slot and where, how long it waited, or why there was
        none."""
        found: dict[str, object] = (
            {"gated": False, "note": self.note}
            if self.index is None
            else {"gated": True, "slot": self.index, "waited": round(self.waited, 3)}
        )
        found["directory"] = self.directory
        return {**found, "ignored": list(self.ignored)} if self.ignored else found


def settings(environ: Mapping[str, str] = os.environ) -> tuple[int, float, tuple[str, ...]]:
    """(slots, wait, ignored) from the environment. A value that is not a number of the right
    kind is not used: the default holds, and ``ignored`` says so (the VMM logs it with its
    slot), as a gate must never keep a VM from starting, nor wait forever."""
    ignored: list[str] = []
    slots = _setting(environ, SLOTS_ENV, int, cpus(), MAX_SLOTS, ignored)
    wait = _setting(environ, WAIT_ENV, float, WAIT, float("inf"), ignored)
    return int(slots), wait, tuple(ignored)


def _setting(
    environ: Mapping[str, str],
    name: str,
    kind: type[int] | type[float],
    default: float,
    above: float,
    ignored: list[str],
) -> float:
    """``name``'s value when it is a number of ``kind`` from 0 to below ``above`` (never NaN,
    never infinite), else ``default``, and why in ``ignored``."""
    text = environ.get(name)
    if text is None:
        return default
    try:
        value: float = kind(text)
    except ValueError:
        value = -1.0
    if 0 <= value < above:
        return value
    what = "a whole number" if kind is int else "a number of seconds"
    bounds = f"from 0 to {above - 1:g}" if above < float("inf") else "0 or more"
    ignored.append(f"{name}={text!r} is not {what} {bounds}: {default:g} used")
    return default


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except OSError:
        return os.cpu_count() or 1


def take(
    directory: str,
    slots: int,
    wait: float = WAIT,
    ignored: tuple[str, ...] = (),
    *,
    poll: float = POLL,
) -> Slot:
    """A free slot of ``slots`` under ``directory`` (made if missing), waiting for one at most
    ``wait`` seconds; a Slot that holds none when there is no gate, no usable directory, or no
    slot came free in time. ``ignored``: settings not used (``settings``), for the log."""
    fd, index, waited, note = _wait_for_slot(directory, slots, wait, poll)
    return Slot(fd, index, waited, note, directory, ignored)


def _wait_for_slot(
    directory: str, slots: int, wait: float, poll: float
) -> tuple[int | None, int | None, float, str]:
    """(fd, index, waited, note) of a held slot, or (None, None, waited, why not)."""
    if slots <= 0:
        return None, None, 0.0, "no gate (0 slots)"
    try:
        fds = _open_slots(directory, slots)
    except OSError as exc:
        return None, None, 0.0, f"no gate: {directory}: {exc.strerror or exc}"
    began = time.monotonic()
    first = os.getpid() % slots  # VMMs starting at once try different slots first
    order = [(first + i) % slots for i in range(slots)]
    while True:
        for index in order:
            if _locked(fds[index]):
                _close_all(fds, keep=index)
                return fds[index], index, time.monotonic() - began, ""
        waited = time.monotonic() - began
        if waited >= wait:
            _close_all(fds)
            return None, None, waited, f"no slot free after {waited:.1f} s: started anyway"
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
