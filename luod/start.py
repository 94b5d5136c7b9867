"""The ``luod`` command's entry point (and ``python -m luod``): luod starts with the garbage
collector off, says READY=1 at once when systemd holds its VMM socket, and begins the fd
keeper's start before its own imports when the keeper will hold its sessions (``begin_keeper``),
and forks the kept retrieve helper after a live update (``begin_retriever``).

Everything luod allocates while it starts (its modules, classes, settings, the sessions taken
back after a kexec) lives as long as luod: the collector would scan it again and again for
nothing, 8–10 ms before the first RECLAIM on a host and many times that under TCG (issue 17,
bench/NOTES.md "Start-up"). luod.daemon.daemon freezes that heap (``gc.freeze()``) once it
serves, and turns the collector on again there.

READY=1 at exec (docs/operations.md §2.2): with socket activation (luod.socket) a VMM may
connect before luod serves; its connection waits in the socket's backlog and is answered once
luod has taken its sessions back. So the VMM units ordered after luod-ready.target start
beside luod's own start instead of after it: after a kexec, their interpreters and imports no
longer follow luod's (bench/NOTES.md "Early boot"). The stop order is unchanged: VMMs still
stop before luod. WatchdogSec= is stretched to ``STARTING_WATCHDOG_USEC`` until luod serves
(its pings start then) and given back in the READY=1 it sends once serving.
``LUOD_READY_AT_EXEC=no`` in the unit's environment keeps READY=1 for once luod serves.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from luod.custody.keeper_start import KeeperStart
    from luod.daemon.settings import Settings
    from luod.kernel.retriever import Helper

STARTING_WATCHDOG_USEC = 90_000_000
"""How long luod may take from exec to serving once it said READY=1 early: systemd's default
start timeout, which bounded that span before (the slowest start measured, in a TCG guest after
a kexec on a host at load 10, took 32 s: bench/NOTES.md)."""


def entry() -> None:
    gc.disable()
    ready_at_exec()
    from luod.daemon.command_line import resolve

    resolved = resolve(None)
    if isinstance(resolved, int):  # --check-config, a bad configuration: said and done
        sys.exit(resolved)
    keeper = begin_keeper(resolved.settings)
    helper = begin_retriever(resolved.settings)
    from luod.main import serve  # every module luod needs, imported with the collector off

    sys.exit(serve(resolved, keeper, helper))


def begin_keeper(settings: Settings) -> KeeperStart | None:
    """When luod's custodian will be the fd keeper (no systemd fd store), begin the keeper's
    start before luod's imports: after a kexec no keeper is left, and its start (an interpreter
    and its imports) then runs beside luod's instead of after them, on a core luod's imports
    leave idle (luod.custody.choose.begin_keeper). Anything amiss there is left to the daemon's
    own start, which says what (None)."""
    from luod.custody.choose import begin_keeper as begin

    return begin(settings.runtime_dir, settings.custody)


EARLY_RETRIEVER_VMS = 1
"""VMs handed over, at least, for the retrieve helper's early fork. That fork, of a process with
one thread and a few MB, costs less than the fork of luod it saves at the first RECLAIM from
another cgroup (0.5 against 1.4 ms on a host). Spawned there instead (a second interpreter), the
helper cost 0.3-1.2 s of luod's start in the systemd guest and paid only from 8 VMs
(bench/NOTES.md). ``$LUOD_EARLY_RETRIEVER_VMS`` sets another count (0: after every live
update)."""


def begin_retriever(settings: Settings) -> Helper | None:
    """After a live update of at least ``early_retriever_vms()`` VMs (the state directory's
    journal ends with the handoff's kexec line, which carries the update's record), fork the
    kept retrieve helper before luod's imports, when luod runs in a cgroup of its own
    (luod.kernel.retriever.begin_early): then every VMM's RECLAIM, from its own cgroup, finds
    it ready instead of forking luod (each fork 1.4 ms on a host, 30 ms under TCG). None
    otherwise; the simulator retrieves in place."""
    if settings.simulate is not None:
        return None
    from luod.core.kexec_journal import handed_over_vms

    handed_over = handed_over_vms(settings.state_dir)
    if handed_over is None or handed_over < early_retriever_vms():
        return None
    from luod.kernel.retriever import begin_early

    return begin_early()


def early_retriever_vms(environ: Mapping[str, str] = os.environ) -> int:
    """``$LUOD_EARLY_RETRIEVER_VMS``, else EARLY_RETRIEVER_VMS; a value that is not a count is
    said on stderr (the journal, under systemd) and the default holds."""
    text = environ.get("LUOD_EARLY_RETRIEVER_VMS")
    if text is None:
        return EARLY_RETRIEVER_VMS
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count >= 0:
        return count
    print(
        f"luod: LUOD_EARLY_RETRIEVER_VMS={text!r} is not a count of VMs; "
        f"{EARLY_RETRIEVER_VMS} holds (hint: a whole number, 0 for every live update)",
        file=sys.stderr,
    )
    return EARLY_RETRIEVER_VMS


def ready_at_exec() -> bool:
    """READY=1 before luod's imports, when systemd passed the VMM socket (else: once serving,
    luod.daemon.systemd.ready). Returns whether it was sent."""
    from luod.custody import sdnotify

    if sdnotify.ready_at_exec() is False or not sdnotify.passed_listener(sdnotify.VMM_SOCKET):
        return False
    state = "READY=1\nSTATUS=starting: VMMs wait in luod.socket until luod serves"
    usec = sdnotify.watchdog_usec()
    if usec is not None:
        state += f"\nWATCHDOG_USEC={max(usec, STARTING_WATCHDOG_USEC)}"
    try:
        return sdnotify.notify(state)
    except (OSError, ValueError):
        return False  # luod says READY=1 again once serving, and reports a failure then
