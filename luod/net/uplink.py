"""The host's uplink across a kexec: which link carries the default route before it, and when
that link is up again after it — the moment guests can be reached again, the network end of
their blackout (a VM that reclaimed its memory is still unreachable until then).

rtnetlink through pyroute2's IPRoute (sync API, the same in 0.8 and 0.9; luod.net.iproute),
imported only when used: never
on luod's critical path. Link state is sampled every ``POLL`` seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import structlog

log = structlog.get_logger("luod.net")

POLL: Final = 0.05
IFF_UP: Final = 0x1
IFF_RUNNING: Final = 0x40  # the lower layer is up (carrier)


def default_uplink() -> str | None:
    """The link of the IPv4 default route (IPv6 when there is none); None without one."""
    try:
        from luod.net.iproute import iproute_class  # lazy: off the critical path

        with iproute_class()() as ipr:
            for family in (socket.AF_INET, socket.AF_INET6):
                for route in ipr.get_default_routes(family=family):
                    if (index := route.get_attr("RTA_OIF")) is not None:
                        return _name(ipr, index)
    except Exception as exc:  # best effort: no uplink is reported, never fatal
        log.warning("uplink-unknown", error=f"{type(exc).__name__}: {exc}")
    return None


def wait_up(
    name: str,
    timeout: float,
    stop: threading.Event | None = None,
    now: Callable[[], float] = time.monotonic,
) -> bool | None:
    """Block until link ``name`` is up with carrier: True; False after ``timeout`` or once
    ``stop`` is set (a link that never appears counts as not up); None when rtnetlink cannot
    tell (no pyroute2)."""
    stop = stop or threading.Event()
    try:
        from luod.net.iproute import iproute_class

        with iproute_class()() as ipr:
            deadline = now() + timeout
            while not is_up(ipr, name):
                if now() >= deadline or stop.wait(POLL):
                    return False
            return True
    except Exception as exc:  # best effort, as above
        log.warning("uplink-watch-failed", link=name, error=f"{type(exc).__name__}: {exc}")
        return None


def is_up(ipr: Any, name: str) -> bool:
    indexes = ipr.link_lookup(ifname=name)
    if not indexes:
        return False  # not there yet (udev may rename it later in boot)
    flags = int(ipr.get_links(indexes[0])[0]["flags"])
    return flags & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING


def _name(ipr: Any, index: int) -> str | None:
    links = ipr.get_links(index)
    return str(links[0].get_attr("IFLA_IFNAME")) if links else None
