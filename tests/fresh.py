"""Code run in a fresh interpreter, for tests of what an import loads: no earlier import in
pytest's own process can hide it there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(code: str, *path: Path) -> subprocess.CompletedProcess[str]:
    """``code`` (dedented) in a fresh interpreter, ``path`` first on its sys.path, then the
    repository; it must succeed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (*path, REPO)))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=REPO,
        timeout=60,
    )


def last_json(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The JSON object the code printed last."""
    return dict(json.loads(done.stdout.splitlines()[-1]))
