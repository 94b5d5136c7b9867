"""The host's uplink across a kexec: which link carries the default route before it, and when
that link is up again after it — the moment guests can be reached again, the network end of
their blackout (a VM that reclaimed its memory is still unreachable until then).

The route is read with rtnetlink through pyroute2's IPRoute (sync API, the same in 0.8 and 0.9;
luod.net.iproute), at prepare, imported only then. The link's state after the kexec is read from
sysfs (``/sys/class/net/NAME/flags`` and ``operstate``), sampled every ``POLL`` seconds: that
watch runs while VMMs reclaim and restore, and pyroute2's import there cost 48 ms of CPU on a
host and about 1 s in a TCG guest (bench/NOTES.md), taken from luod's GIL. sysfs shows the
network namespace it was mounted in, which for luod is the host's.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import structlog

log = structlog.get_logger("luod.net")

POLL: Final = 0.05
IFF_UP: Final = 0x1
RUNNING_STATES: Final = frozenset({"up", "unknown"})  # the kernel's IFF_RUNNING (netif_oper_up)
SYS_CLASS_NET: Final = Path("/sys/class/net")


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
    links: Path = SYS_CLASS_NET,
) -> bool | None:
    """Block until link ``name`` is up with carrier: True; False after ``timeout`` or once
    ``stop`` is set (a link that never appears counts as not up); None when sysfs has no
    ``links`` directory to tell."""
    stop = stop or threading.Event()
    if not links.is_dir():
        log.warning("uplink-watch-failed", link=name, error=f"no {links}")
        return None
    deadline = now() + timeout
    while not is_up(name, links):
        if now() >= deadline or stop.wait(POLL):
            return False
    return True


def is_up(name: str, links: Path = SYS_CLASS_NET) -> bool:
    """IFF_UP set and the operational state up (or unknown, for links that do not report one):
    what rtnetlink reports as IFF_UP and IFF_RUNNING."""
    if not name or "/" in name or name in (".", ".."):
        return False
    try:
        flags = int((links / name / "flags").read_text(), 16)
        operstate = (links / name / "operstate").read_text().strip()
    except (OSError, ValueError):
        return False  # not there yet (udev may rename it later in boot)
    return bool(flags & IFF_UP) and operstate in RUNNING_STATES


def _name(ipr: Any, index: int) -> str | None:
    links = ipr.get_links(index)
    return str(links[0].get_attr("IFLA_IFNAME")) if links else None
