"""The manifest's JSON form: compact, keys sorted, ASCII. Python's ``json`` cannot take a
fragment already encoded, so the handoff's last line, whose update record grows with the VMs
(225 KB at 1000), is put together from texts of this form encoded ahead
(luod.core.manifest.kexec_line): byte for byte what one ``json.dumps`` of the whole writes.
"""

from __future__ import annotations

import json
from typing import Final

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
"""``json.dumps`` with these arguments builds one per call: ~1 us of a VM's ~5 us."""


def dumps(value: object) -> str:
    """``value`` in the manifest's form: the manifest, its journal lines, the handoff's.
    Compact: the C encoder (``indent=`` falls back to the pure-Python one, 5x slower)."""
    return _ENCODER.encode(value)
