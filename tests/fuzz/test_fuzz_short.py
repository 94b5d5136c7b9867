"""The short pass of every fuzz target (``make test``): about 10^3 inputs each, run as
``make fuzz`` runs them (10^5), and the same outcome checks: no crash, no hang, no traceback in
luod's log, luod's fds back to where they were and its RSS within the slack, and (for the
targets with a running luod) a well-behaved VMM's update completed afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.__main__ import figures, run
from tests.fuzz.luod_process import RSS_SLACK

pytestmark = pytest.mark.integration
SHORT = 1000


@pytest.mark.parametrize("target", ["dispatch", "socket", "rest"])
def test_short_fuzz_pass(target: str, tmp_path: Path) -> None:
    outcome, output = run(target, SHORT, tmp_path)
    print(figures(outcome))
    assert outcome.inputs >= SHORT, output[-3000:]
    assert not outcome.failures(RSS_SLACK), (figures(outcome), outcome.notes[:10])
