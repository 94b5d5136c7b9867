"""Whether the state directory's journal ends with the handoff's kexec line: the last luod
reached ``reboot()`` (or ``systemctl kexec``) with it, so a luod starting now most likely
follows a live update and its VMMs are about to RECLAIM (luod.start reads this before luod's
imports, to begin the kept retrieve helper's start beside them).

Only a hint: the handoff itself is session ``luod`` (luod.core.recovery). A luod started again
after the reclaim began finds a new snapshot there and no kexec line; a kexec that failed
leaves one until luod writes its next snapshot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from luod.core import statedir

JOURNAL: Final = "journal.jsonl"
"""Changes since the last snapshot (luod.core.manifest), one JSON line each, appended with one
write(2): a luod killed at any instant leaves whole lines (a torn last line is ignored)."""
KEXEC_LINE_START: Final = b'{"kexec":'
"""How ``manifest.kexec_line`` begins (the journal's last line inside the VMs' pause)."""


def ends_with_kexec(state_dir: Path) -> bool:
    try:
        journal = statedir.read(state_dir / JOURNAL)
    except OSError:
        return False
    if not journal:
        return False
    return journal.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(KEXEC_LINE_START)
