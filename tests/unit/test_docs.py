"""The project's documents are in the project.

Code, tests and docs cite sections as ``docs/kernel.md §4.4`` (also ``§4.6–§4.9, §5`` lists and
ranges); every cited section must exist as a numbered heading of that file. Inside ``docs/*.md``
a bare ``§8.12`` means a section of the same file. And nothing may cite the reference documents
kept outside the repository again: they are not there for whoever reads the code.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED_DIRS = ("luod", "tests", "bench", "api", "docs", "systemd", "packaging", ".ci")
SCANNED_FILES = ("README.md", "Makefile", "pyproject.toml")
SKIPPED_DIRS = frozenset(
    {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
)
THIS = Path(__file__).resolve()  # names the forbidden citations in its patterns

NUMBER = r"\d+(?:\.\d+)*"
HEADING = re.compile(rf"^#{{1,6}} (?P<number>{NUMBER})\.?\s", re.MULTILINE)
CITATION = re.compile(
    rf"(?P<path>(?:docs|api)/[\w-]+\.md)`? §(?P<first>{NUMBER})"
    rf"(?P<rest>(?:(?:–|-|, ?)§{NUMBER})*)"
)
BARE = re.compile(rf"§(?P<number>{NUMBER})")
LINE_BREAK = re.compile(r"[ \t]*\n[ \t]*(?:#+[ \t]+)?")
OUTSIDE = {
    "a section of the reference contract": re.compile(r"\b(?:CONTRACT|contract)(?:\.md)? §"),
    "a section of the reference design": re.compile(r"\bDESIGN(?:\.md)? §"),
    "the reference contract": re.compile(r"\bCONTRACT\.md\b"),
    "the reference design": re.compile(r"\bDESIGN\.md\b"),
    "the reference style guide": re.compile(r"\bSTYLE\.md\b"),
    "the systemd guest notes": re.compile(r"\bSYSTEMD-GUEST\.md\b"),
    "the shared kernel notes": re.compile(r"shared/kernel/README"),
}


def scanned() -> list[Path]:
    found = [REPO / name for name in SCANNED_FILES if (REPO / name).is_file()]
    for top in SCANNED_DIRS:
        for path in sorted((REPO / top).rglob("*")):
            parts = path.relative_to(REPO).parts
            if path.is_file() and path != THIS and not SKIPPED_DIRS.intersection(parts):
                found.append(path)
    return found


@cache
def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


@cache
def sections(doc: str) -> frozenset[str]:
    text = text_of(REPO / doc)
    if text is None:
        return frozenset()
    return frozenset(m["number"] for m in HEADING.finditer(text))


def joined(text: str) -> str:
    """Lines joined, so that a citation wrapped in a comment or docstring reads as one."""
    return LINE_BREAK.sub(" ", text)


def cited(text: str) -> list[tuple[str, str]]:
    """(doc, section) of every path-qualified citation, list items and range ends included."""
    found = []
    for match in CITATION.finditer(joined(text)):
        numbers = [match["first"], *BARE.findall(match["rest"])]
        found += [(match["path"], number) for number in numbers]
    return found


def cited_in_doc(doc: str, text: str) -> list[tuple[str, str]]:
    """In docs/X.md: the qualified citations, plus bare §N meaning X.md itself."""
    flat = joined(text)
    own = [(doc, m["number"]) for m in BARE.finditer(CITATION.sub(" ", flat))]
    return cited(text) + own


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_the_docs_exist_with_numbered_sections() -> None:
    for doc in ("docs/kernel.md", "docs/architecture.md", "docs/operations.md"):
        assert len(sections(doc)) >= 5, f"{doc} is missing or has no numbered sections"


def test_every_cited_section_exists() -> None:
    missing = []
    for path in scanned():
        text = text_of(path)
        if text is None:
            continue
        rel = relative(path)
        is_doc = rel.startswith("docs/") and rel.endswith(".md")
        for doc, number in cited_in_doc(rel, text) if is_doc else cited(text):
            if number not in sections(doc):
                missing.append(f"{rel} cites {doc} §{number}")
    assert not missing, "cited sections that do not exist:\n" + "\n".join(missing)


def test_nothing_cites_documents_outside_the_repository() -> None:
    found = []
    for path in scanned():
        text = text_of(path)
        if text is None:
            continue
        for what, pattern in OUTSIDE.items():
            for match in pattern.finditer(joined(text)):
                found.append(f"{relative(path)}: {match.group(0)!r} ({what})")
    assert not found, "citations of documents outside the repository:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see docs/kernel.md §4.4.", [("docs/kernel.md", "4.4")]),
        (
            "(docs/kernel.md §4.6–§4.9, §5)",
            [("docs/kernel.md", n) for n in ("4.6", "4.9", "5")],
        ),
        ("(`api/vmm-protocol.md` §12)", [("api/vmm-protocol.md", "12")]),
        ("after serialization (docs/kernel.md\n    # §5.3)", [("docs/kernel.md", "5.3")]),
        ("no citation here: §4 alone", []),
    ],
)
def test_citations_are_found_in_every_form(text: str, expected: list[tuple[str, str]]) -> None:
    assert cited(text) == expected


def test_a_bare_section_in_a_doc_means_that_doc() -> None:
    text = "see §8.12 and `docs/kernel.md §4.4, §5`"
    assert cited_in_doc("docs/operations.md", text) == [
        ("docs/kernel.md", "4.4"),
        ("docs/kernel.md", "5"),
        ("docs/operations.md", "8.12"),
    ]


def test_a_missing_section_is_caught() -> None:
    assert "4.4" in sections("docs/kernel.md")
    assert "99.1" not in sections("docs/kernel.md")
