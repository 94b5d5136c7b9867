"""``luod --help`` is a usage text an operator can act on (issue 16 §5)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest

from luod.main import DEFAULTS, parse_args, parser

pytestmark = pytest.mark.unit


def test_luod_help_says_what_it_is_how_to_run_it_and_its_exit_codes() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as ended:
        parse_args(["--help"])
    text = out.getvalue()
    assert ended.value.code == 0
    assert text.startswith("usage: luod [--simulate STATE_DIR] [--config FILE] [options]")
    assert "``" not in text  # not a module docstring
    for part in ("examples:", "files:", "signals:", "exit status:", "luoctl(1)", "--log-level"):
        assert part in text


def test_a_wrong_log_level_is_a_usage_error() -> None:
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as ended:
        parse_args(["--log-level", "loud"])
    assert ended.value.code == 2


def test_an_empty_command_line_means_the_parsers_defaults() -> None:
    """luod.service runs ``luod`` without arguments: those defaults come without argparse
    (luod.main.DEFAULTS), and must be what the parser would give."""
    assert vars(parser().parse_args([])) == DEFAULTS
    assert vars(parse_args([])) == DEFAULTS


def test_the_luod_command_without_arguments_does_not_import_argparse() -> None:
    code = "import sys, luod.main; luod.main.parse_args([]); print('argparse' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
