"""The man pages of luoctl, one per command, made from its argument parser (argparse-manpage):
``python man/generate.py man/`` writes luoctl.1 and luoctl-COMMAND.1 (``make man``);
tests/unit/test_manpages.py fails when the checked-in pages drifted from the parser."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from argparse_manpage.manpage import Manpage

import luod
from luod.cli.output import EPILOG
from luod.cli.parser import build_parser

EXIT_STATUS = EPILOG.split("\n\n")[0].split("\n", 1)[1]  # the table of exit codes
DATE = "2026-12"
SEE_ALSO = "luoctl(1), luod(8); luod's REST API: api/openapi.json"


def parsers() -> dict[str, argparse.ArgumentParser]:
    """luoctl and each of its commands (``update start`` as luoctl-update-start)."""
    top = build_parser()
    found = {"luoctl": top}
    for name, sub in _children(top):
        found[f"luoctl-{name}"] = sub
        for verb, leaf in _children(sub):
            found[f"luoctl-{name}-{verb}"] = leaf
    return found


def _children(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [(name, sub) for action in actions for name, sub in action.choices.items()]


def page(name: str, parser: argparse.ArgumentParser) -> str:
    data = {
        "project_name": "luod",
        "version": luod.__version__,
        "manual_title": "luod manual",
        "date": DATE,  # fixed, so that the pages are reproducible (the version says which)
    }
    man = Manpage(parser, _data=data)
    man.add_section("exit status", "=", _exit_status())
    man.add_section("see also", "=", SEE_ALSO if name != "luoctl" else "luod(8)")
    head = f".TH {parser.prog.upper()} "  # one word as the title: LUOCTL-UPDATE-WAIT
    return str(man).replace(head, f".TH {name.upper()} ", 1)


def _exit_status() -> str:
    """The epilog's table as roff: a tagged paragraph per code."""
    lines = []
    for line in EXIT_STATUS.splitlines():
        code, _, meaning = line.strip().partition("  ")
        if code.isdigit():
            lines += [".TP", f".B {code}", meaning.strip()]
        else:
            lines += [".PP", line.strip()]
    return "\n".join(lines)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, parser in parsers().items():
        (out / f"{name}.1").write_text(page(name, parser))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "man"))
