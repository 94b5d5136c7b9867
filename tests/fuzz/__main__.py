"""``python -m tests.fuzz [--inputs N] [--targets dispatch,socket,rest]`` (``make fuzz``): runs
each target in a process of its own, prints its figures (inputs, crashes, hangs, tracebacks in
luod's log, luod's fds and RSS before/after, the update afterwards, wall time) and exits 1 if
any target failed its outcome checks (Outcome.failures)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz.luod_process import RSS_SLACK, SCRATCH_ENV, scratch_dir
from tests.fuzz.outcome import SUMMARY, Outcome

TARGETS = ("dispatch", "socket", "rest")
HANG = 30  # seconds: libFuzzer's per-input timeout for the in-process target


def command(target: str, inputs: int, artifacts: Path, special: bool = True) -> list[str]:
    if target == "dispatch":  # the prelude (every request type, each field hostile) adds ~1,650
        return [
            sys.executable,
            "-m",
            "tests.fuzz.coverage",
            "dispatch",
            f"-runs={inputs}",
            "-max_len=8192",
            "-len_control=0",
            f"-timeout={HANG}",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
        ]
    extra = [] if special or target != "socket" else ["--no-special"]
    return [sys.executable, "-m", f"tests.fuzz.{target}_target", f"--inputs={inputs}", *extra]


def run(target: str, inputs: int, artifacts: Path, special: bool = True) -> tuple[Outcome, str]:
    """One target's outcome; a process that ends without its summary (a libFuzzer timeout: a
    hang; a crash of the fuzzer) is a failure with the end of its output."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"luod-fuzz-{target}-", dir=scratch_dir()) as root:
        done = subprocess.run(
            command(target, inputs, artifacts, special),
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, SCRATCH_ENV: root},  # the target's luod state, removed after
        )
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(SUMMARY)]
    if lines:
        outcome = Outcome.from_json(lines[-1].removeprefix(SUMMARY))
    else:
        outcome = Outcome(target, hangs=int("ALARM: working on the last Unit" in output))
        outcome.crash(RuntimeError(output[-2000:]), b"", None, f"{target} ended without summary")
    outcome.seconds = time.monotonic() - started
    return outcome, output


def figures(outcome: Outcome) -> str:
    fds = "-" if outcome.fds is None else f"{outcome.fds[0]} -> {outcome.fds[1]}"
    rss = "-" if outcome.rss is None else f"{outcome.rss[0] >> 20} -> {outcome.rss[1] >> 20} MiB"
    return (
        f"{outcome.target:9} inputs {outcome.inputs:7}  crashes {outcome.crash_count:4}  "
        f"hangs {outcome.hangs:3}  tracebacks {outcome.tracebacks:4}  fds {fds:9}  "
        f"rss {rss:17}  update after: {outcome.update_after or '-':9}  "
        f"wall {outcome.seconds:7.1f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument(
        "--no-special", action="store_true", help="socket: no FIFO, no /dev/zero as kernel path"
    )
    args = parser.parse_args()
    artifacts = Path(tempfile.mkdtemp(prefix="luod-fuzz-artifacts-"))
    failed = False
    for target in args.targets.split(","):
        outcome, output = run(target, args.inputs, artifacts, not args.no_special)
        (artifacts / f"{target}.log").write_text(output)
        print(figures(outcome), flush=True)
        for failure in outcome.failures(RSS_SLACK):
            failed = True
            print(f"  FAIL {failure}", flush=True)
        for note in outcome.notes[:10]:
            print(f"  note {note}", flush=True)
    print(f"artifacts (crash inputs, each target's output): {artifacts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
