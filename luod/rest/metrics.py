"""Prometheus metrics, computed from the facade's status and history at each scrape.

A collector rather than gauges updated in place: luod's state lives in the registry and the
update driver, and reading it at scrape time can never drift from it. Update outcomes are
counted from the history file, so the counter survives luod restarts and kexecs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from luod.core.orchestrator import Phase
from luod.rest import models


class Scrape(Collector):
    """One scrape's metrics (``generate_latest(Scrape(status, history))``)."""

    def __init__(self, status: models.Status, history: models.History) -> None:
        self.status, self.history = status, history

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self.status
        yield _build_info(status.version)
        yield _phase(status.phase)
        for name, value, doc in (
            ("luod_vms", status.vms, "VMs luod knows"),
            ("luod_sessions", status.sessions, "LUO sessions luod holds"),
            ("luod_preserved_files", status.files, "Files preserved in those sessions"),
            ("luod_preserved_bytes", status.preserved_bytes, "Bytes preserved"),
            ("luod_liveupdate_number", status.liveupdate_number, "Live updates of this host"),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        history = self.history.history
        yield _outcomes(record.outcome for record in history)
        yield _last_blackout(history[-1].blackout if history else {})


def _build_info(version: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily("luod_build_info", "luod's version (always 1)", labels=["version"])
    family.add_metric([version], 1.0)
    return family


def _phase(current: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "luod_update_phase", "1 for the update phase luod is in", labels=["phase"]
    )
    for phase in {*map(str, Phase), current}:
        family.add_metric([phase], 1.0 if phase == current else 0.0)
    return family


def _outcomes(outcomes: Iterable[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "luod_updates", "Updates that ended, by outcome (from the history)", labels=["outcome"]
    )
    counts = Counter(outcomes)
    for outcome in ("completed", "completed-with-unreclaimed", "aborted", "failed", "refused"):
        counts.setdefault(outcome, 0)
    for outcome, count in sorted(counts.items()):
        family.add_metric([outcome], count)
    return family


def _last_blackout(blackout: dict[str, float | None]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "luod_last_update_blackout_seconds",
        "Per VM, freeze ack to done in the last update that ended",
        labels=["vm"],
    )
    for vm, seconds in sorted(blackout.items()):
        if seconds is not None:
            family.add_metric([vm], seconds)
    return family
