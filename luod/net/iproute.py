"""pyroute2's IPRoute without the rest of pyroute2: luod's one way in to pyroute2.

``import pyroute2`` runs the package's ``__init__``, which imports every netlink family pyroute2
has (conntrack, IPDB and NDB with multiprocessing, nl80211, WireGuard, ipset, 9p...): about
160 ms on a host and 4 s in the TCG test guest (bench/NOTES.md, NIC rebuild). luod uses
IPRoute alone, and after a kexec that import stands between a VM with NICs and the answer to
its RECLAIM (luod.daemon.nics).

So the package module is made from its spec without running its ``__init__`` (luod.deferred),
and IPRoute comes from its own module, ``pyroute2.iproute.linux``. The package completes itself
(runs its ``__init__``) the first time anyone asks it for a name that is not a submodule of it:
``from pyroute2 import NDB`` elsewhere in the process works as usual. With a pyroute2 laid out
otherwise, the whole package is imported, as before.
"""

from __future__ import annotations

from typing import Any

from luod.deferred import defer_init

PACKAGE = "pyroute2"


def iproute_class() -> Any:
    """pyroute2's IPRoute (the synchronous rtnetlink API)."""
    _defer_package_init()
    try:
        from pyroute2.iproute.linux import IPRoute
    except ImportError:
        from pyroute2 import IPRoute
    return IPRoute


def netlink_error() -> type[Exception]:
    """pyroute2's NetlinkError (its ``code`` is the errno)."""
    _defer_package_init()
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError  # type: ignore[no-any-return]


def _defer_package_init() -> None:
    """``pyroute2`` in sys.modules, its ``__init__`` not run yet (unless it was imported
    before, or is not installed: then the import that follows says so)."""
    defer_init(PACKAGE, complete_for_submodules=False)
