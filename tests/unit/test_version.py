"""luod's version is written once (luod/__init__.py) and everything reads it from there."""

from __future__ import annotations

import importlib.metadata
import json
import re
import tomllib
from pathlib import Path

import pytest
from prometheus_client import generate_latest

import luod
from luod import main as luod_main
from luod.cli import main as luoctl
from luod.core.orchestrator import Phase
from luod.rest import models
from luod.rest.metrics import Scrape

REPO = Path(__file__).resolve().parents[2]
VERSION = luod.__version__


def test_the_version_is_written_in_luod_init_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "luod/__init__.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


def test_the_installed_metadata_has_it() -> None:
    """Stale after a version change until `make` reinstalls (its stamp depends on the file)."""
    assert importlib.metadata.version("luod") == VERSION


def test_the_debian_changelog_has_it() -> None:
    head = (REPO / "packaging/debian/changelog").read_text().splitlines()[0]
    assert head.startswith(f"luod ({VERSION}) "), "add a changelog entry for the new version"


def test_the_checked_in_openapi_document_has_it() -> None:
    spec = json.loads((REPO / "api/openapi.json").read_text())
    assert spec["info"]["version"] == VERSION


def test_luod_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        luod_main.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"luod {VERSION}"


def test_luoctl_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert luoctl.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"luoctl {VERSION}"


def test_the_metrics_carry_it() -> None:
    status = models.Status(
        host="h",
        kernel="7.2.13",
        luo_supported=True,
        liveupdate_number=0,
        phase=Phase.IDLE,
        vms=0,
        sessions=0,
        files=0,
        preserved_bytes=0,
        backend="sim",
        version=VERSION,
        custody=models.CustodyHealth(kind="memory", healthy=True, renewals=0, problem=""),
    )
    text = generate_latest(Scrape(status, models.VmList(vms=[]), [])).decode()
    build = [line for line in text.splitlines() if line.startswith("luod_build_info{")]
    assert len(build) == 1 and f'version="{VERSION}"' in build[0], build
