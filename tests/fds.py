"""This process's fd table, for the tests' leak guards."""

from __future__ import annotations

import os


def fd_table() -> dict[str, str]:
    """fd number → what it points at (an fd closed while listing is skipped)."""
    table = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            table[entry] = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue
    return table
