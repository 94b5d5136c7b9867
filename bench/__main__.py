"""``python -m bench``: every benchmark, printed as tables (see README in this directory)."""

from __future__ import annotations

import sys

from bench import baseline


def main() -> int:
    print(baseline.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
