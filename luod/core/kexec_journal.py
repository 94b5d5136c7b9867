"""Whether the state directory's journal ends with the handoff's kexec line, and with how many
VMs: the last luod reached ``reboot()`` (or ``systemctl kexec``) with it, so a luod starting
now most likely follows a live update and that many VMMs are about to RECLAIM (luod.start reads
this before luod's imports, to begin the kept retrieve helper's start beside them).

Only a hint: the handoff itself is session ``luod`` (luod.core.recovery). A luod started again
after the reclaim began finds a new snapshot there and no kexec line; a kexec that failed
leaves one until luod writes its next snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from luod.core import record_lines, statedir

JOURNAL: Final = "journal.jsonl"
"""Changes since the last snapshot (luod.core.manifest), one JSON line each, appended with one
write(2): a luod killed at any instant leaves whole lines (a torn last line is ignored)."""
KEXEC_LINE_START: Final = b'{"kexec":'
"""How ``manifest.kexec_line`` begins (the journal's last line inside the VMs' pause)."""


def handed_over_vms(state_dir: Path) -> int | None:
    """None unless the journal ends with the kexec line; else the VMs of the update record it
    carries, as staged or stepped in its change lines since (0 when it carries none, or the
    line is torn or not what luod writes)."""
    line = _kexec_line(state_dir)
    if line is None:
        return None
    try:
        kexec = json.loads(line)["kexec"]
        record = kexec["extra"]["update"]
        if not isinstance(record["vms"], dict):
            return 0
        record_lines.apply_all(record, kexec.get("update_lines", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0
    return len(record["vms"])


def _kexec_line(state_dir: Path) -> bytes | None:
    try:
        journal = statedir.read(state_dir / JOURNAL)
    except OSError:
        return None
    last = (journal or b"").rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return last if last.startswith(KEXEC_LINE_START) else None
