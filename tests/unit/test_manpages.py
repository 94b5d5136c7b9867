"""man/: a page per luoctl command, made from its parser (man/generate.py), checked in and kept
in step with it; each page lists the exit codes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit
MAN = Path(__file__).resolve().parents[2] / "man"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("man_generate", MAN / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_has_its_page_and_the_pages_match_the_parser() -> None:
    man = generator()
    pages = man.parsers()
    assert {"luoctl", "luoctl-vm", "luoctl-update-wait", "luoctl-update-watch"} <= set(pages)
    assert {p.name for p in MAN.glob("*.1")} == {f"{name}.1" for name in pages}
    for name, parser in pages.items():
        assert (MAN / f"{name}.1").read_text() == man.page(name, parser), (
            f"man/{name}.1 drifted: run 'make man'"
        )


def test_each_page_lists_the_exit_codes() -> None:
    for page in MAN.glob("*.1"):
        text = page.read_text()
        assert ".SH EXIT STATUS" in text and ".B 6\ntimed out" in text, page.name
