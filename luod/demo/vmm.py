"""``luod-demo-vmm``: a reference VMM.

``run`` creates "guest RAM" (memfds with a pattern), hands it to luod (handover: REGISTER +
PRESERVE; delegation: SUBSCRIBE, then preserve into the session fd luod sends with
START_PRESERVATION), and keeps writing into it until told to stop (SIGUSR1/SIGTERM, or the
START_PRESERVATION / FREEZE event); then it records the sha256 of every region. ``reclaim``
runs after the kexec: it gets the memory back (RECLAIM, or CLAIM + RETRIEVE_FD), verifies every
sha256 against the record, and tells luod it is done.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from luod import kernel  # its backend loads on first use: only delegation needs it
from luod.demo.ram import RamRegion, digest, parse_size
from luod.errors import LuodError
from luod.kernel.errors import LuoError
from luod.vmm.client import Client, ConnectionBroken

DEFAULT_SOCKET = "/run/luod/liveupdate.sock"
WAIT_FOR_LUOD = 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="luod-demo-vmm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="create RAM, hand it over, keep writing until stopped")
    run.add_argument("--ram", action="append", default=[], metavar="NAME=SIZE")
    run.add_argument("--mode", choices=("handover", "delegation"), default="handover")
    run.add_argument(
        "--nic",
        action="append",
        default=[],
        metavar="TAP[:BRIDGE]",
        help="a network device of the VM, rebuilt by luod after the kexec (repeatable)",
    )
    run.add_argument("--interval", type=float, default=0.005, help="seconds between writes")
    run.add_argument(
        "--on-freeze",
        choices=("ready", "refuse", "ignore"),
        default="ready",
        help="how to answer FREEZE (refuse/ignore: to exercise an abort)",
    )
    reclaim = sub.add_parser("reclaim", help="after the kexec: get RAM back and verify it")
    for each in (run, reclaim):
        each.add_argument("--id", required=True)
        each.add_argument("--socket", default=DEFAULT_SOCKET)
        each.add_argument("--record", type=Path, required=True, help="JSON record of digests")
        each.add_argument(
            "--wait-for-luod",
            type=float,
            default=WAIT_FOR_LUOD,
            metavar="SECONDS",
            help=f"wait for luod's socket while luod starts (default {WAIT_FOR_LUOD:g})",
        )
    return parser.parse_args(argv)


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = threading.Event()
        self.regions = [self._region(spec) for spec in args.ram or ["ram0=4M"]]
        self.tokens: dict[str, int] = {}
        self.writes = 0
        self.running = True

    def _region(self, spec: str) -> RamRegion:
        name, _, size = spec.partition("=")
        return RamRegion.create(self.args.id, name, parse_size(size or "4M"))

    def run(self) -> int:
        signal.signal(signal.SIGUSR1, lambda *_: self.stop.set())
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        client: Client | None = Client(self.args.socket, wait=self.args.wait_for_luod)
        assert client is not None
        try:
            if self.args.mode == "handover":
                client.register(self.args.id, nics=[_nic(spec) for spec in self.args.nic])
                client.preserve(self.args.id, {r.name: r.fd for r in self.regions})
                _say("handed-over", vm=self.args.id, files=[r.name for r in self.regions])
            else:
                client.subscribe(self.args.id)
                if self.args.nic:
                    client.nics(self.args.id, [_nic(spec) for spec in self.args.nic])
                _say("subscribed", vm=self.args.id)
            while (client := self._guest_runs(client)) is not None:
                pass
        finally:
            if client is not None:
                client.close()
        self._record()
        return 0

    def _reconnect(self) -> Client | None:
        """luod went away (killed, restarted): connect again and REGISTER/SUBSCRIBE again
        (api/vmm-protocol.md §12); the guest stays as it was (paused stays paused)."""
        _say("luod-gone", vm=self.args.id, paused=not self.running)
        while not self.stop.wait(0.2):
            client = None
            try:
                client = Client(self.args.socket)
                if self.args.mode == "handover":
                    client.register(self.args.id)
                else:
                    client.subscribe(self.args.id)
            except (OSError, ConnectionBroken, LuodError):
                if client is not None:
                    client.close()
                continue
            _say("reconnected", vm=self.args.id)
            return client
        return None

    def _guest_runs(self, client: Client) -> Client | None:
        """Write into RAM and answer luod's events until a signal stops the VMM (None), or
        luod goes away (the new connection)."""
        while not self.stop.is_set():
            if self.running:
                for region in self.regions:
                    region.scribble(self.writes)
                self.writes += 1
            try:
                event = client.wait_event(timeout=self.args.interval)
                if event is not None:
                    with event:
                        self._answer(client, event)
            except (OSError, ConnectionBroken):
                client.close()
                return self._reconnect()
        client.close()
        return None

    def _answer(self, client: Client, event: Any) -> None:
        try:
            self._on_event(client, event)
        except LuodError as exc:  # e.g. an update aborted meanwhile
            _say("event-failed", vm=self.args.id, name=event.name, error=str(exc))

    def _on_event(self, client: Client, event: Any) -> None:
        if event.name == "START_PRESERVATION":
            if not self.tokens:  # after an aborted update they are still preserved
                with kernel.kernel_backend().device.adopt_session(event.fds[0].dup()) as session:
                    for token, region in enumerate(self.regions, start=1):
                        session.preserve(region.fd, token)
                        self.tokens[region.name] = token
            client.ready(self.args.id)
            _say("preserved", vm=self.args.id, tokens=self.tokens)
        elif event.name == "FREEZE":
            if self.args.on_freeze == "ignore":
                _say("ignoring-freeze", vm=self.args.id)
                return
            self.running = False  # vCPUs paused: the memory is final now
            self._record()
            if self.args.on_freeze == "refuse":
                client.ready(self.args.id, error="demo VMM refuses to freeze")
            else:
                client.ready(self.args.id)
            _say("frozen", vm=self.args.id, writes=self.writes)
        elif event.name == "RESUME":
            self.running = True
            _say("resumed", vm=self.args.id, reason=event.data.get("reason", ""))

    def _record(self) -> None:
        files = {
            r.name: {"sha256": r.sha256(), "size": r.size, "token": self.tokens.get(r.name)}
            for r in self.regions
        }
        record = {
            "vm": self.args.id,
            "mode": self.args.mode,
            "writes": self.writes,
            "stopped": time.time(),
            "files": files,
        }
        self.args.record.write_text(json.dumps(record, indent=1))
        _say("recorded", vm=self.args.id, writes=self.writes)


def reclaim(args: argparse.Namespace) -> int:
    record = json.loads(args.record.read_text())
    nics = None
    _say("reclaiming", vm=args.id, at=time.time())  # started and imported (bench timelines)
    with Client(args.socket, wait=args.wait_for_luod) as client:
        fds: dict[str, Any]
        if record["mode"] == "handover":
            fds = client.reclaim(args.id)
            nics = fds.nics
        else:
            fds = _claim_and_retrieve(client, args.id, record)
        _say("got-memory", vm=args.id, at=time.time())
        digests = {name: digest(fd) for name, fd in fds.items()}
        results = {name: digests[name] == record["files"][name]["sha256"] for name in fds}
        for fd in fds.values():
            fd.close()
        missing = sorted(set(record["files"]) - set(fds))
        ok = all(results.values()) and not missing
        if ok:
            client.done(args.id)
    verdict = "verified" if ok else "mismatch"
    _say(verdict, vm=args.id, files=results, missing=missing, sha256=digests, nics=nics)
    return 0 if ok else 1


def _claim_and_retrieve(client: Client, vm: str, record: dict[str, Any]) -> dict[str, Any]:
    with kernel.kernel_backend().device.adopt_session(client.claim(vm)) as session:
        fds = {name: session.retrieve(info["token"]) for name, info in record["files"].items()}
        session.finish()
    return fds


def _nic(spec: str) -> tuple[str, str | None]:
    name, _, bridge = spec.partition(":")
    return name, bridge or None


def _say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return Runner(args).run() if args.command == "run" else reclaim(args)
    except (LuodError, LuoError, OSError) as exc:
        print(f"luod-demo-vmm: {exc}", file=sys.stderr)
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
