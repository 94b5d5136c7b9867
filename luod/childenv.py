"""The environment of the small Python processes luod starts with ``python -S`` (the keeper's
starter, the kept retrieve helper): luod's own minus what systemd meant for luod alone, with
luod's source root first on ``PYTHONPATH`` (without ``site`` they find luod there, from a
checkout too)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import luod

LUOD_ONLY: Final = ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "FDSTORE")
"""systemd's variables for luod's own process: a child that saw them could notify as luod."""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LUOD_ONLY}
    source_root = str(Path(luod.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    return env
