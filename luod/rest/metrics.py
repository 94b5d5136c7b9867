"""Prometheus metrics, computed from the facade's status, VMs and history at each scrape.

A collector rather than metrics updated in place: luod's state lives in the registry and the
update driver, and reading it at scrape time can never drift from it. Everything about updates
comes from the history file (``luod_updates_total``, the histograms of blackouts and phase
durations, the last blackout), so it survives luod restarts and kexecs: a host's counters only
ever grow, as Prometheus expects of a counter, and the last blackout stays visible after the
update ended (until the next update measures one). Process metrics are prometheus_client's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from luod.core import blackout_split
from luod.core.model import VmState
from luod.core.orchestrator import Phase
from luod.rest import models
from luod.rest.history_reads import Ended

BLACKOUT_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
PHASE_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
ENDED: Final = tuple(str(o) for o in models.Outcome if o is not models.Outcome.RUNNING)
_LUOD: list[int | str] = ["self"]  # luod's pid, once the REST worker knows it
PROCESS: Final = ProcessCollector(pid=lambda: _LUOD[0], registry=None)
WORKER: Final = ProcessCollector(namespace="luod_rest_worker", registry=None)


def luod_is(pid: int) -> None:
    """In the REST worker: ``process_*`` describe luod's process (``pid``, the one holding the
    sessions), and ``luod_rest_worker_process_*`` the worker's own."""
    _LUOD[0] = pid


class Scrape(Collector):
    """One scrape's metrics (``generate_latest(Scrape(status, vms, ended))``); ``ended``: every
    ended update's facts, newest first (``RestFacade.ended_updates``)."""

    def __init__(self, status: models.Status, vms: models.VmList, ended: Sequence[Ended]):
        self.status, self.vms = status, vms
        self.history = ended

    def collect(self) -> Iterator[Metric]:
        status = self.status
        build = GaugeMetricFamily(
            "luod_build_info", "luod's version and the running kernel", labels=["version", "kernel"]
        )
        build.add_metric([status.version, status.kernel], 1.0)
        yield build
        yield _phase(status.phase)
        yield GaugeMetricFamily(
            "luod_update_running",
            "1 while an update runs (any phase but idle)",
            value=float(status.phase is not Phase.IDLE),
        )
        for name, value, doc in (
            ("luod_vms", status.vms, "VMs luod knows"),
            ("luod_sessions", status.sessions, "LUO sessions luod holds"),
            ("luod_preserved_files", status.files, "Files preserved in those sessions"),
            ("luod_preserved_bytes", status.preserved_bytes, "Bytes preserved"),
            ("luod_liveupdate_number", status.liveupdate_number, "Live updates of this host"),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        yield _vm_states(vm.state for vm in self.vms.vms)
        yield from _custody(status.custody)
        yield from self._updates()
        yield from PROCESS.collect()
        if _LUOD[0] != "self":
            yield from WORKER.collect()

    def _updates(self) -> Iterator[Metric]:
        history = self.history
        yield _outcomes(record.outcome for record in history)
        yield _failures(history)
        yield _histogram(
            "luod_update_blackout_seconds",
            "Per VM and update, freeze ack to done across the kexec",
            BLACKOUT_BUCKETS,
            {(): [s for r in history for s in r.blackout_seconds.values() if s is not None]},
        )
        yield _histogram(
            "luod_update_phase_duration_seconds",
            "Time spent in each phase of an update (phases left)",
            PHASE_BUCKETS,
            _phase_durations(history),
            label="phase",
        )
        yield _histogram(
            "luod_update_blackout_part_seconds",
            "Per VM and update, each part of its blackout (wait, kexec, boot, start, luod, "
            "reclaim, restore; docs/operations.md section 4)",
            BLACKOUT_BUCKETS,
            _blackout_parts(history),
            label="part",
        )
        yield _last_blackout(history)
        yield _last_blackout_parts(history)


def _phase(current: Phase) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "luod_update_phase", "1 for the update phase luod is in", labels=["phase"]
    )
    for phase in Phase:
        family.add_metric([str(phase)], 1.0 if phase == current else 0.0)
    return family


def _custody(custody: models.CustodyHealth) -> Iterator[Metric]:
    healthy = GaugeMetricFamily(
        "luod_custody_healthy",
        "1 while the custodian (systemd's fd store or the keeper) holds every session",
        labels=["kind"],
    )
    healthy.add_metric([custody.kind], float(custody.healthy))
    yield healthy
    yield CounterMetricFamily(
        "luod_custody_renewals",
        "Custodians replaced (and given every session again) after a loss",
        value=custody.renewals,
    )


def _vm_states(states: Iterable[VmState]) -> GaugeMetricFamily:
    family = GaugeMetricFamily("luod_vms_by_state", "VMs luod knows, by state", labels=["state"])
    counts = Counter(states)
    for state in VmState:
        family.add_metric([str(state)], counts[state])
    return family


def _outcomes(outcomes: Iterable[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "luod_updates", "Updates that ended, by outcome (from the history)", labels=["outcome"]
    )
    counts = Counter(str(o) for o in outcomes)
    for outcome in ENDED:
        family.add_metric([outcome], counts[outcome])
    return family


def _failures(history: Sequence[Ended]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "luod_update_failures",
        "Updates that did not complete cleanly, by outcome and reason code",
        labels=["outcome", "reason"],
    )
    counts = Counter(
        (str(r.outcome), str(r.reason_code))
        for r in history
        if r.outcome not in (models.Outcome.COMPLETED, models.Outcome.RUNNING)
    )
    for (outcome, reason), count in sorted(counts.items()):
        family.add_metric([outcome, reason], count)
    return family


def _phase_durations(history: Sequence[Ended]) -> dict[tuple[str, ...], list[float]]:
    """Per phase, how long each update stayed in it: from entering it to the next transition
    (a phase the update is still in is not counted yet)."""
    found: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for record in history:
        for phase, seconds in record.phase_seconds:
            found[(phase,)].append(seconds)
    return found


def _blackout_parts(history: Sequence[Ended]) -> dict[tuple[str, ...], list[float]]:
    """Per part, its seconds in every VM of every update that stamped them all (``start`` is
    left out where the record had no ``luod_exec``)."""
    found: dict[tuple[str, ...], list[float]] = {(part,): [] for part in blackout_split.PARTS}
    for record in history:
        for parts in record.blackout_parts.values():
            for part, seconds in parts.items():
                if seconds is not None:
                    found[(part,)].append(seconds)
    return found


def _histogram(
    name: str,
    doc: str,
    buckets: Sequence[float],
    samples: dict[tuple[str, ...], list[float]],
    label: str | None = None,
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for labels, values in sorted(samples.items()):
        counts = [0] * (len(buckets) + 1)
        for value in values:
            counts[bisect_left(buckets, value)] += 1
        cumulative, running = [], 0
        for bound, count in zip([*map(str, buckets), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric(list(labels), cumulative, sum_value=sum(values))
    return family


def _last_blackout(history: Sequence[Ended]) -> GaugeMetricFamily:
    """The newest update that measured a blackout: it stays visible until the next does."""
    family = GaugeMetricFamily(
        "luod_last_update_blackout_seconds",
        "Per VM, freeze ack to done in the last update that measured one",
        labels=["vm"],
    )
    for record in history:
        measured = {vm: s for vm, s in record.blackout_seconds.items() if s is not None}
        if measured:
            for vm, seconds in sorted(measured.items()):
                family.add_metric([vm], seconds)
            break
    return family


def _last_blackout_parts(history: Sequence[Ended]) -> GaugeMetricFamily:
    """The parts of each blackout in ``luod_last_update_blackout_seconds``, when luod stamped
    every step of that update (an aborted update's resumed VMs have none)."""
    family = GaugeMetricFamily(
        "luod_last_update_blackout_part_seconds",
        "Per VM, each part of its blackout in the last update that measured one",
        labels=["vm", "part"],
    )
    for record in history:
        if any(s is not None for s in record.blackout_seconds.values()):
            for vm, parts in sorted(record.blackout_parts.items()):
                for part, seconds in parts.items():
                    if seconds is not None:
                        family.add_metric([vm, part], seconds)
            break
    return family
