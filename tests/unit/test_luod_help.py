"""``luod --help`` is a usage text an operator can act on (issue 16 §5)."""

from __future__ import annotations

import contextlib
import io

import pytest

from luod.main import parse_args

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
