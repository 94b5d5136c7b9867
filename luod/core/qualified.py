"""Whether kernel A → kernel B has a passing qualification on this host (issue 14 §1).

A qualification record is a history entry (luod.core.timeline's history.jsonl) of the form
``{"kind": "qualification", "id": ..., "outcome": "passed", "chain": [{"release": ...,
"version": ...}, ...], ...}``: each consecutive pair of its chain is a qualified step (a chain
A,B,A qualifies A→B and B→A). Kernels match by release and, where both are known, by
``uname -v`` (which tells two builds of one release apart). Pure: records in, a verdict out.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from luod.core.abi import Side, Verdict


def find_qualification(
    history: Iterable[Mapping[str, Any]], running: Side, next_: Side
) -> Mapping[str, Any] | None:
    """The latest passing qualification of running → next in ``history``, if any."""
    for record in reversed(list(history)):
        if record.get("kind") != "qualification" or record.get("outcome") != "passed":
            continue
        chain = [k for k in record.get("chain", []) if isinstance(k, Mapping)]
        for first, second in itertools.pairwise(chain):
            if _same_kernel(first, running) and _same_kernel(second, next_):
                return dict(record)
    return None


def _same_kernel(entry: Mapping[str, Any], side: Side) -> bool:
    version = str(entry.get("version") or "")
    return entry.get("release") == side.release and (
        not version or not side.version or version == side.version
    )


def qualification_verdict(record: Mapping[str, Any] | None, running: Side, next_: Side) -> Verdict:
    step = f"{running.release} → {next_.release}"
    if next_.release == "?":
        return Verdict("warn", "no qualification looked up: the next kernel is unknown")
    if record is None:
        return Verdict(
            "warn",
            f"no passing qualification of {step} on record on this host",
            "qualify the pair on a canary first (luoctl qualify, issue 14 §1)",
        )
    return Verdict("pass", f"{step} qualified on this host (record {record.get('id', '?')})")
