"""packaging/prometheus's alerting rules and packaging/grafana's dashboard: valid PromQL
(``promtool check rules``, on the rules and on every panel's query turned into a recording
rule), and every metric they name is one luod exports (a real scrape of the REST app)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from luod.core import timeline
from luod.core.clock import Stamp
from luod.rest.app import create_app
from tests.rest.harness import Luod

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "packaging" / "prometheus" / "luod-alerts.yml"
DASHBOARD = REPO / "packaging" / "grafana" / "luod-fleet.json"
GET_PROMTOOL = REPO / "packaging" / "prometheus" / "get-promtool"
METRIC = re.compile(r"\b(luod_[a-z_]+|process_[a-z_]+|up)\b(?!\s*\()")
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m"}


def promtool() -> str | None:
    found = subprocess.run([GET_PROMTOOL], capture_output=True, text=True, check=False)
    return found.stdout.strip().splitlines()[-1] if found.returncode == 0 else None


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name a luod with some history exports at /metrics."""
    luod = Luod(tmp_path_factory.mktemp("scrape"))
    at = Stamp(1_800_000_000.0, 0, 0)
    record = timeline.UpdateRecord(request={"kernel": "/k", "uid": 0}, outcome="aborted")
    record.phase({"from": "idle", "to": "preparing", "reason": "", "at": at.to_dict()})
    record.phase({"from": "preparing", "to": "idle", "reason": "", "at": at.to_dict()})
    record.vm_event("vm1", "freeze_ack", at)
    record.vm_event("vm1", "done", at)
    timeline.append_history(luod.state, record)
    transport = httpx.ASGITransport(app=create_app(luod.facade))

    async def scrape() -> str:
        async with httpx.AsyncClient(transport=transport, base_url="http://luod") as client:
            return (await client.get("/metrics")).text

    text = asyncio.run(scrape())
    luod.close()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def expressions(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        found = [doc["expr"]] if isinstance(doc.get("expr"), str) else []
        return found + [e for key, v in doc.items() if key != "expr" for e in expressions(v)]
    if isinstance(doc, list):
        return [e for item in doc for e in expressions(item)]
    return []


def names_in(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}|\"[^\"]*\"|by \([^)]*\)", "", expr)
    return set(METRIC.findall(without_labels))


def test_every_alert_is_complete_and_names_metrics_luod_exports(exported: set[str]) -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {"LuodVmLost", "LuodUpdateFailed", "LuodUpdateStuck"}
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        unknown = names_in(rule["expr"]) - exported - {"up"}
        assert not unknown, (rule["alert"], unknown)


def test_the_dashboard_shows_the_fleet_and_names_metrics_luod_exports(
    exported: set[str],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Updates in flight", "Blackout distribution", "Failures by reason"} <= titles
    assert "Hosts by kernel" in titles
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["description"]
        exprs = expressions(panel["targets"])
        assert exprs, panel["title"]
        for expr in exprs:
            assert names_in(expr) and not names_in(expr) - exported, (panel["title"], expr)


def test_promtool_checks_the_rules_and_every_dashboard_query(tmp_path: Path) -> None:
    tool = promtool()
    if tool is None:  # no promtool and no way to get it: the parsing tests above stand
        pytest.skip("promtool unavailable (packaging/prometheus/get-promtool)")
    checked = subprocess.run([tool, "check", "rules", RULES], capture_output=True, text=True)
    assert checked.returncode == 0 and "SUCCESS: 8 rules found" in checked.stdout, checked
    queries = expressions(json.loads(DASHBOARD.read_text())["panels"])
    for variable, value in GRAFANA_RANGES.items():
        queries = [q.replace(variable, value) for q in queries]
    recording = [{"record": f"dashboard:query_{n}", "expr": q} for n, q in enumerate(queries)]
    as_rules = tmp_path / "dashboard-queries.yml"
    as_rules.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": recording}]}))
    checked = subprocess.run([tool, "check", "rules", as_rules], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
