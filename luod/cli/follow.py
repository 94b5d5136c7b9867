"""``luoctl update wait`` and ``update watch``: follow luod's event stream.

Both start from the state luod reports first (``STATE``) and follow the events after it; times
are luod's only (each event carries its own). ``wait`` is the scripting primitive: it prints
the outcome and exits with it; ``watch`` shows the update as it goes (a live table on a
terminal, luod.cli.live; one line per event otherwise).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from luod.cli import render
from luod.cli.client import Api, Unreachable
from luod.cli.feed import Ended, Feed, reconnect
from luod.cli.output import EXIT_ERROR, EXIT_OF_OUTCOME, EXIT_OK, EXIT_TIMEOUT, Output
from luod.cli.sse import Event

GRACE: Final = 30.0
"""How long a broken stream is retried: luod restarting, or starting after the kexec."""
TICK: Final = 0.25


@dataclass
class Progress:
    """What the events say so far: the phase, the update (as STATE gave it), how it ended."""

    phase: str = ""
    update: dict[str, Any] | None = None
    outcome: str | None = None
    seen_update: bool = False  # an update ran (or ran on) while we followed
    steps: list[Event] = field(default_factory=list)

    def take(self, event: Event) -> None:
        data = event.data
        if event.name == "STATE":
            self.phase, self.update = str(data.get("phase", "")), data.get("update")
            self.seen_update = self.seen_update or self.phase != "idle"
        elif event.name == "PHASE":
            self.phase = str(data.get("to", self.phase))
            self.seen_update = True
        elif event.name == "UPDATE_END" and self.seen_update:
            self.outcome = str(data.get("outcome"))

    @property
    def kernel(self) -> str:
        request = (self.update or {}).get("request") or {}
        return str(request.get("kernel") or "the next kernel")

    @property
    def last_outcome(self) -> str | None:
        """Nothing runs: how the last update ended (None: no update yet)."""
        if self.phase != "idle" or self.update is None:
            return None
        return str(self.update.get("outcome"))


def update_wait(api: Api, args: argparse.Namespace, out: Output) -> int:
    """Until the running update ends (or the host reboots into it); its outcome is the exit."""
    until = time.monotonic() + (args.wait_timeout or math.inf)
    progress = Progress()
    for event in _events(api, until, progress):
        progress.take(event)
        if event.name == "STATE" and progress.last_outcome is not None:
            return ended(api, out, progress.last_outcome, "no update is running; the last: ")
        if event.name == "STATE" and progress.update is None and progress.phase == "idle":
            out.line("no update is running, and none ran yet", {"update": None})
            return EXIT_OK
        if progress.phase == "rebooting":
            return rebooting(out, progress)
        if progress.outcome is not None:
            return ended(api, out, progress.outcome)
    if progress.phase == "rebooting":
        return rebooting(out, progress)
    where = f"the update is still {progress.phase}" if progress.phase else "luod said nothing yet"
    out.error(f"timed out after {args.wait_timeout:g} s: {where}", "wait again, or abort it")
    return EXIT_TIMEOUT


def update_watch(api: Api, args: argparse.Namespace, out: Output) -> int:
    """Show the update as it goes until it ends (one line per event: luod.cli.live draws the
    terminal view)."""
    progress = Progress()
    for event in _events(api, math.inf, progress):
        progress.take(event)
        if out.as_json:
            out.line("", {"event": event.name, **event.data})
        else:
            out.line("\n".join(render.event(event.name, event.data)))
        if progress.phase == "rebooting":
            return rebooting(out, progress, watching=True)
        if progress.outcome is not None:
            return ended(api, out, progress.outcome, watching=True)
    return EXIT_ERROR  # not reached: without a timeout the events end only as above


def _events(api: Api, until: float, progress: Progress) -> Iterator[Event]:
    for event in events(api, until, progress):
        if event is not None:
            yield event


def events(api: Api, until: float, progress: Progress) -> Iterator[Event | None]:
    """The events until ``until`` (monotonic), and None every ``TICK`` without one (a view
    redraws); a broken stream is resumed for ``GRACE``; a stream cut while rebooting just
    ends (the host is going down)."""
    feed = Feed(api).start()
    broken: float | None = None
    while (left := until - time.monotonic()) > 0:
        item = feed.next(min(left, TICK))
        if item is None:
            yield None
            continue
        if isinstance(item, Event):
            broken = None
            yield item
            continue
        if progress.phase == "rebooting":
            return
        broken = broken if broken is not None else time.monotonic()
        if time.monotonic() - broken < GRACE and reconnect(feed, until):
            continue
        _raise(api, item)


def _raise(api: Api, ended: Ended) -> None:
    if ended.error is not None:
        raise ended.error
    raise Unreachable(api.where, ConnectionError("luod ended the event stream"))


def rebooting(out: Output, progress: Progress, watching: bool = False) -> int:
    update_id = (progress.update or {}).get("id", "")
    if watching and out.as_json:
        return EXIT_OK  # the PHASE event said it
    out.line(
        f"rebooting into {progress.kernel}: after the reboot, 'luoctl update wait' follows "
        "the reclaim",
        {"phase": "rebooting", "id": update_id, "kernel": progress.kernel},
    )
    return EXIT_OK


def ended(api: Api, out: Output, outcome: str, prefix: str = "", watching: bool = False) -> int:
    """The update's record as it ended (``update watch``: its blackout, after the events)."""
    record = api.get("/v1/update")["update"]
    if watching:
        if not out.as_json:
            out.line("\n".join(render.blackout(record or {}, split=True)) or "no blackout measured")
    else:
        out.line(prefix + "\n".join(render.ended(record)), record)
    return EXIT_OF_OUTCOME.get(outcome, EXIT_ERROR)
