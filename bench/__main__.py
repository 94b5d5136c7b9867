"""``python -m bench``: every benchmark, printed as tables side by side (not tests: no limits
are asserted; targets are printed next to the measures)."""

from __future__ import annotations

import sys

from bench import baseline, handover, orchestration, rest_load


def main() -> int:
    for report in (baseline.report, handover.report, orchestration.report, rest_load.report):
        print(report(), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
