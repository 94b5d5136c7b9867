"""VM network plumbing across a kexec: record each VM's devices before it, rebuild what is
missing after it, and warn beforehand about what cannot be rebuilt (issue 15).

    with Plumbing(managed_bridges={"br0"}) as net:
        record = net.record([NicDecl("tap0", "br0")])   # at prepare, per VM -> the manifest
        ...                                              # kexec
        report = net.rebuild(record)                     # before that VM's RECLAIM

rebuild never raises: a device that cannot be rebuilt is reported with its reason, and the
others are rebuilt. It leaves alone whatever exists (see luod.core.nic_plan). rtnetlink through
pyroute2's IPRoute (luod.net.iproute), imported when a Plumbing is made: never by shelling out
to ip(8). Blocking (one
netlink round trip per step, a few ms per tap): an asyncio caller runs it in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from luod.core.nic import BridgeRecord, NetRecord, NicDecl, NicRecord
from luod.core.nic_actions import CREATES, Action
from luod.core.nic_plan import Verdict, fixups, plan
from luod.core.nic_report import (
    DeviceOutcome,
    NicWarning,
    RebuildReport,
    Status,
    rebuilt,
    untouched,
)
from luod.core.nic_report import warnings as nic_warnings
from luod.errors import LuodError
from luod.net.rebuild import Executor, explain
from luod.net.rtnl import Device, Reader

log = structlog.get_logger("luod.net")


@dataclass
class Run:
    """What happened to one device's steps."""

    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Plumbing:
    """Record, rebuild and check VM network devices over one rtnetlink socket."""

    """Record, rebuild and check VM network devices over one rtnetlink socket."""

    def __init__(
        self,
        managed_bridges: Collection[str] = (),
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        from luod.net.iproute import iproute_class  # only when VMs have NICs

        _refuse_event_loop()
        self.managed = frozenset(managed_bridges)
        self.clock = clock
        self.ipr: Any = iproute_class()()

    def __enter__(self) -> Plumbing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ipr.close()

    def record(self, decls: Sequence[NicDecl]) -> NetRecord:
        """One VM's declared devices as they are now, and the managed bridges they sit on."""
        reader = Reader(self.ipr)
        nics, absent = [], []
        for decl in decls:
            device = _read(reader, decl.name)
            if device is None:
                absent.append(decl.name)
            else:
                nics.append(device if isinstance(device, NicRecord) else _as_nic(device))
        masters = dict.fromkeys(n.master for n in nics if n.master in self.managed)
        bridges = [_read(reader, name) for name in masters if name is not None]
        return NetRecord(
            tuple(nics), tuple(b for b in bridges if isinstance(b, BridgeRecord)), tuple(absent)
        )

    def rebuild(self, record: NetRecord) -> RebuildReport:
        """Recreate what is missing exactly as recorded; report every device.

        Creation steps first (create, then MAC, MTU, bridge, up in one request), then one read
        back of what was rebuilt; what the kernel's defaults made differ (port settings,
        VLANs) is put back and read again."""
        started = self.clock()
        reader = Reader(self.ipr)
        executor = Executor(reader)
        recorded = _devices(record)
        current, unreadable = _current(reader, recorded)
        plans = [p for p in plan(record, current) if p.name not in unreadable]
        runs = {
            p.name: self._run(executor, p.actions, Run())
            for p in plans
            if p.verdict is Verdict.REBUILD
        }
        after = self._fix(reader, executor, {name: recorded[name] for name in runs}, runs)
        outcomes = [_unreadable(name, recorded[name], why) for name, why in unreadable.items()]
        for p in plans:
            if p.name not in runs:
                outcomes.append(untouched(p))
                continue
            run = runs[p.name]
            outcomes.append(
                rebuilt(p, run.done, run.errors, after[p.name], recorded[p.name], run.seconds)
            )
        report = RebuildReport(tuple(outcomes), self.clock() - started)
        log.info("nics-rebuilt", ready=report.ready, exact=report.exact, problems=report.problems)
        return report

    def preflight(self, nics: Mapping[str, Sequence[NicDecl]]) -> list[NicWarning]:
        """For each VM: every declared device exists and is of a kind luod can rebuild."""
        found: list[NicWarning] = []
        for vm, decls in nics.items():
            try:
                found += nic_warnings(vm, decls, self.record(decls), self.managed)
            except Exception as exc:  # a warning, never a failed preflight
                found.append(
                    NicWarning(vm, "*", "nic-unreadable", f"VM {vm}: {explain(exc)}", "retry")
                )
        return found

    def _run(self, executor: Executor, actions: Sequence[Action], run: Run) -> Run:
        started = self.clock()
        for action in actions:
            try:
                executor.run(action)
            except Exception as exc:  # reported per step; the other devices go on
                run.errors.append(f"{action}: {explain(exc)}")
                log.warning("nic-step-failed", error=run.errors[-1])
                if isinstance(action, CREATES):
                    break
            else:
                run.done.append(str(action))
        run.seconds += self.clock() - started
        return run

    def _fix(
        self,
        reader: Reader,
        executor: Executor,
        recorded: Mapping[str, NicRecord | BridgeRecord],
        runs: Mapping[str, Run],
    ) -> dict[str, Device | None]:
        """Read the rebuilt devices back, put back what the kernel's defaults changed
        (luod.core.nic_plan.fixups), and read those once more."""
        after = _read_back(reader, recorded, runs)
        fixed = False
        for name, device in after.items():
            if device is not None and (actions := fixups(recorded[name], device)):
                self._run(executor, actions, runs[name])
                fixed = True
        return _read_back(reader, recorded, runs) if fixed else after


def record(decls: Sequence[NicDecl], managed_bridges: Collection[str] = ()) -> NetRecord:
    with Plumbing(managed_bridges) as net:
        return net.record(decls)


def rebuild(net_record: NetRecord) -> RebuildReport:
    """``Plumbing.rebuild`` on a socket of its own; without rtnetlink at all, every device is
    reported failed (and nothing raises)."""
    try:
        net = Plumbing()
    except Exception as exc:
        reason = f"rtnetlink unavailable: {explain(exc)}"
        devices = _devices(net_record)
        return RebuildReport(tuple(_unreadable(n, d, reason) for n, d in devices.items()), 0.0)
    with net:
        return net.rebuild(net_record)


def preflight(
    nics: Mapping[str, Sequence[NicDecl]], managed_bridges: Collection[str] = ()
) -> list[NicWarning]:
    with Plumbing(managed_bridges) as net:
        return net.preflight(nics)


def _refuse_event_loop() -> None:
    """pyroute2's synchronous API runs an event loop of its own, which cannot run inside one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise LuodError(
        "internal",
        "luod.net.Plumbing made in a thread that runs an asyncio event loop",
        "make and use it in a worker thread (asyncio.to_thread)",
    )


def _devices(record: NetRecord) -> dict[str, NicRecord | BridgeRecord]:
    devices: dict[str, NicRecord | BridgeRecord] = {b.name: b for b in record.bridges}
    return devices | {nic.name: nic for nic in record.nics}


def _read(reader: Reader, name: str) -> Device | None:
    try:
        return reader.device(name)
    except LuodError:
        raise
    except Exception as exc:
        raise LuodError(
            "net-unreadable", f"cannot read network device {name}: {explain(exc)}", "retry"
        ) from exc


def _current(
    reader: Reader, recorded: Mapping[str, NicRecord | BridgeRecord]
) -> tuple[dict[str, Device | None], dict[str, str]]:
    current: dict[str, Device | None] = {}
    unreadable: dict[str, str] = {}
    for name in recorded:
        try:
            current[name] = reader.device(name)
        except Exception as exc:
            unreadable[name] = f"cannot read it: {explain(exc)}"
    return current, unreadable


def _unreadable(name: str, device: NicRecord | BridgeRecord, reason: str) -> DeviceOutcome:
    role = "bridge" if isinstance(device, BridgeRecord) else "nic"
    return DeviceOutcome(name, role, Status.FAILED, reason=reason)


def _as_nic(bridge: BridgeRecord) -> NicRecord:
    """A declared device that is itself a bridge: recorded, but not a NIC luod rebuilds."""
    return NicRecord(bridge.name, "bridge", bridge.mac, bridge.mtu, bridge.up)


def _read_back(
    reader: Reader, names: Collection[str], runs: Mapping[str, Run]
) -> dict[str, Device | None]:
    reader.forget_vlans()
    after: dict[str, Device | None] = {}
    for name in names:
        try:
            after[name] = reader.device(name)
        except Exception as exc:
            runs[name].errors.append(f"read back: {explain(exc)}")
            after[name] = None
    return after
