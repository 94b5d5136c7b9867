"""Every event luod logs is in the log table of docs/operations.md §6, and every event that
table names is one luod logs: an operator reading the journal finds each line explained, and
the table explains no line that luod no longer writes. The same for luod-qemu's error codes and
their runbook table (§8.22)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LEVELS = frozenset({"debug", "info", "warning", "error", "exception", "critical"})
LOGGERS = frozenset({"log", "logger"})  # structlog.get_logger(...), and self.log / self.logger
NAME = re.compile(r"`([a-z][a-z0-9]*(?:-[a-z0-9]+)+|[a-z]+)`")


def logged_in(source: str) -> Iterator[str]:
    """The event names of ``log.<level>("event", ...)`` calls (self.log too)."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        receiver = node.func.value
        name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
        if node.func.attr in LEVELS and name in LOGGERS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield first.value


def logged() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((REPO / "luod").rglob("*.py")):
        for event in logged_in(path.read_text()):
            found.setdefault(event, str(path.relative_to(REPO)))
    return found


def first_column(section: str) -> set[str]:
    """The names in the first column of a section's tables."""
    rows = (line.split("|")[1] for line in section.splitlines() if line.startswith("| `"))
    return {name for cell in rows for name in NAME.findall(cell)}


def documented() -> set[str]:
    """The names in the log table of operations.md §6."""
    text = (REPO / "docs/operations.md").read_text()
    return first_column(text.split("\n## 6. ", 1)[1].split("\n## 7. ", 1)[0])


def test_the_finder_sees_every_form_luod_logs_in() -> None:
    source = """
log.info("serving", socket=1)
self.log.warning("retriever-lost", error=why)
log.exception("qualification-error")
other.info("not-a-log-line")
log.info(event_name)
"""
    assert list(logged_in(source)) == ["serving", "retriever-lost", "qualification-error"]


def test_every_event_luod_logs_is_in_the_log_table() -> None:
    missing = {event: where for event, where in logged().items() if event not in documented()}
    assert not missing, f"add these to docs/operations.md §6: {missing}"


def test_every_event_in_the_log_table_is_one_luod_logs() -> None:
    stale = documented() - set(logged())
    assert not stale, f"docs/operations.md §6 names events luod does not log: {sorted(stale)}"


def adapter_codes() -> dict[str, str]:
    """The codes of ``QemuAdapterError(code, ...)`` in luod-qemu."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "luod/qemu").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "QemuAdapterError":
                first = node.args[0] if node.args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.setdefault(first.value, str(path.relative_to(REPO)))
    return found


def test_every_luod_qemu_error_code_is_in_its_runbook_table() -> None:
    text = (REPO / "docs/operations.md").read_text()
    table = first_column(text.split("\n### 8.22 ", 1)[1].split("\n## ", 1)[0])
    codes = adapter_codes()
    assert len(codes) >= 10, codes  # the finder sees them
    assert set(codes) == table, (sorted(set(codes) - table), sorted(table - set(codes)))
