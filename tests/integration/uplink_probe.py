"""Run inside a fresh network namespace with its own sysfs (``unshare --net --mount``, then sysfs
mounted on /sys, which shows the namespace it is mounted in): a veth uplink with a default route,
its carrier lost (peer down) and back (peer up), as luod.net.uplink sees it (the route through
rtnetlink, the link's state through sysfs). One JSON line."""

from __future__ import annotations

import json
import threading
import time

from pyroute2 import IPRoute

from luod.net import uplink


def main() -> None:
    result: dict[str, object] = {"before": uplink.default_uplink()}
    with IPRoute() as ipr:
        ipr.link("add", ifname="up0", kind="veth", peer="peer0")
        index, peer = ipr.link_lookup(ifname="up0")[0], ipr.link_lookup(ifname="peer0")[0]
        ipr.link("set", index=peer, state="up")
        ipr.link("set", index=index, state="up")
        ipr.addr("add", index=index, address="192.0.2.2", prefixlen=24)
        ipr.route("add", dst="0.0.0.0/0", gateway="192.0.2.1", oif=index)
        result["uplink"] = uplink.default_uplink()
        ipr.link("set", index=peer, state="down")  # up0 stays IFF_UP, without carrier
        time.sleep(0.1)
        result["down_is_up"] = uplink.is_up("up0")
        outcome: list[bool | None] = []
        begin = time.monotonic()
        waiter = threading.Thread(target=lambda: outcome.append(uplink.wait_up("up0", 5.0)))
        waiter.start()
        time.sleep(0.3)
        ipr.link("set", index=peer, state="up")
        raised = time.monotonic() - begin
        waiter.join()
        result.update(up=outcome[0], raised=raised, seen=time.monotonic() - begin)
    begin = time.monotonic()
    result["absent"] = uplink.wait_up("nope0", 0.2)
    result["absent_after"] = time.monotonic() - begin
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    begin = time.monotonic()
    result["stopped"] = uplink.wait_up("nope0", 30.0, stop)
    result["stopped_after"] = time.monotonic() - begin
    print(json.dumps(result))


if __name__ == "__main__":
    main()
