"""The manifest's JSON form (compact, keys sorted, ASCII), and objects of that form composed
from members already encoded: byte for byte what one ``json.dumps`` of the whole writes.

Python's ``json`` cannot take a fragment already encoded, so the handoff's last line, whose
update record grows with the VMs (225 KB at 1000), is put together here from the record's text
encoded before the freeze and the change lines encoded as they were appended
(luod.core.manifest.kexec_line), not encoded whole inside every VM's pause (issue 17;
bench/NOTES.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Final

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
"""``json.dumps`` with these arguments builds one per call: ~1 us of a VM's ~5 us."""


def dumps(value: object) -> str:
    """``value`` in the manifest's form: the manifest, its journal lines, the handoff's.
    Compact: the C encoder (``indent=`` falls back to the pure-Python one, 5x slower)."""
    return _ENCODER.encode(value)


def compose(members: Mapping[str, str]) -> str:
    """``dumps`` of a dict whose values are given as their ``dumps`` texts."""
    return _braced((f"{dumps(key)}:", members[key]) for key in sorted(members))


def _braced(pairs: Iterable[tuple[str, str]]) -> str:
    """``{head1text1,head2text2,...}`` made by one ``str.join``, so each text is copied once
    (a 200 KB text copied at each level costs page faults: milliseconds under TCG)."""
    parts: list[str] = []
    for head, text in pairs:
        parts += (",", head, text)
    parts[:1] = ["{"]  # the first comma (none in an empty object)
    parts.append("}")
    return "".join(parts)
