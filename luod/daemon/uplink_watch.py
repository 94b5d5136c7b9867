"""After a kexec: when the host's uplink (recorded at prepare) is up again, into the update's
timeline as event ``uplink_up``. That is when guests can be reached again — the network end of
their blackout, which the memory path (freeze ack → DONE) does not show.

The watch starts ``START_DELAY`` after luod (the first reclaims come first) and samples the
link's state in sysfs every 50 ms from a thread (luod.net.uplink, which imports no pyroute2 for
it), so the stamp is an upper bound: a link already up at the first sample is stamped then.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Final, Protocol

import structlog

from luod.net import uplink

log = structlog.get_logger("luod.uplink")

START_DELAY: Final = 1.0
TIMEOUT: Final = 120.0


class Recorder(Protocol):
    def recorded_uplink(self) -> str | None: ...
    def uplink_up(self, link: str) -> None: ...


async def watch(driver: Recorder, delay: float = START_DELAY, timeout: float = TIMEOUT) -> None:
    link = driver.recorded_uplink()
    if link is None:
        return
    await asyncio.sleep(delay)
    stop = threading.Event()
    try:
        up = await asyncio.to_thread(uplink.wait_up, link, timeout, stop)
    except asyncio.CancelledError:
        stop.set()  # the sampling thread ends within one period: luod's exit never waits on it
        raise
    if up:
        driver.uplink_up(link)
    elif up is False:  # None: rtnetlink failed, and wait_up has said why
        log.warning(
            "uplink-not-up",
            link=link,
            timeout=timeout,
            hint="renamed, or no carrier: the network end of the blackout is not measured",
        )
