"""Running a target under atheris (libFuzzer, coverage-guided), in a process of its own:
``python -m tests.fuzz.coverage TARGET [libFuzzer options]`` imports ``tests.fuzz.TARGET_target``
with the codec and dispatcher instrumented (``INSTRUMENTED``) and runs its ``main``.

A target gives ``body(data)``: it raises on a crash. Crashes are counted by signature and the run
goes on (``Outcome``), so one run names every distinct crash with the input count of its first
hit; a hang stops the run (libFuzzer's ``-timeout``, reported by the caller). The last input
prints the summary line (libFuzzer ends the process without returning). ``--replay FILE...``
runs saved inputs again.
"""

from __future__ import annotations

import importlib
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.fuzz.outcome import SUMMARY, Outcome, fd_count, rss_bytes

WARMUP = 1000  # inputs before fds and RSS are first measured
INSTRUMENTED = ["luod.vmm", "luod.daemon.handler", "luod.core.dialect"]
"""The codec and the dispatcher: coverage is measured there. Instrumenting all of luod (the
registry, the simulator, structlog) made an input ten times slower for no new edges there."""


def fuzz(
    name: str,
    body: Callable[[bytes], None],
    argv: list[str],
    *,
    settle: Callable[[], None] = lambda: None,
    finish: Callable[[Outcome], None] = lambda _: None,
    prelude: Sequence[tuple[bytes, Callable[[], None]]] = (),
) -> None:
    """Run ``prelude`` (fixed inputs, each a call) then ``body`` under atheris with libFuzzer's
    ``argv`` (``-runs=N`` ends it and prints the summary); ``settle`` runs before fds and RSS
    are measured, ``finish`` completes the outcome (tracebacks of the log) before it prints."""
    import atheris

    outcome = Outcome(name)
    artifacts = _artifacts(argv)
    if "--replay" in argv:
        for path in argv[argv.index("--replay") + 1 :]:
            _one(outcome, body, Path(path).read_bytes(), artifacts, verbose=True)
        _print(outcome, finish)
        return
    for data, call in prelude:  # the input saved with a crash is the request's line
        _one(outcome, _ignoring_input(call), data, artifacts, verbose=True)
    runs = len(prelude) + _runs(argv)
    before: list[int] = []

    def one_input(data: bytes) -> None:
        _one(outcome, body, data, artifacts, verbose=outcome.crash_count < 20)
        if outcome.inputs == len(prelude) + WARMUP or (outcome.inputs == runs and not before):
            settle()
            before[:] = [fd_count(), rss_bytes()]
        if outcome.inputs == runs:
            settle()
            outcome.fds = (before[0], fd_count())
            outcome.rss = (before[1], rss_bytes())
            _print(outcome, finish)

    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()


def _print(outcome: Outcome, finish: Callable[[Outcome], None]) -> None:
    finish(outcome)
    print(SUMMARY + outcome.finish().to_json(), flush=True)


def _ignoring_input(call: Callable[[], None]) -> Callable[[bytes], None]:
    """A prelude's call as a fuzz body: its input is fixed, the bytes given are not used."""
    return lambda _: call()


def _one(
    outcome: Outcome,
    body: Callable[[bytes], None],
    data: bytes,
    artifacts: Path | None,
    *,
    verbose: bool,
) -> None:
    outcome.inputs += 1
    try:
        body(data)
    except Exception as exc:
        crash = outcome.crash(exc, data, artifacts)
        if crash.count == 1 and verbose:
            print(f"CRASH at input {outcome.inputs}: {crash.signature}", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)


def _runs(argv: list[str]) -> int:
    for arg in argv:
        if match := re.fullmatch(r"-runs=(\d+)", arg):
            return int(match[1])
    return -1


def _artifacts(argv: list[str]) -> Path | None:
    for arg in argv:
        if arg.startswith("-artifact_prefix="):
            return Path(arg.split("=", 1)[1])
    return None


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        target = importlib.import_module(f"tests.fuzz.{sys.argv[1]}_target")
    target.main(sys.argv[2:])


if __name__ == "__main__":
    main()
