"""The REST stack stays off luod's critical path: importing the daemon (and ``luod.rest``
itself) loads no web framework; only the daemon's lazy import after the VMM socket serves does."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit
HEAVY = ("fastapi", "starlette", "uvicorn", "prometheus_client", "httpx")


def test_importing_the_daemon_and_luod_rest_loads_no_web_stack() -> None:
    code = (
        "import sys, luod.rest, luod.main\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_a_luod_on_a_real_host_never_loads_the_simulator() -> None:
    """luod.kernel.sim is plugged in by luod.kernel.open_backend only when asked for."""
    code = (
        "import sys, luod.main\n"
        "from luod.kernel import open_backend\n"
        "open_backend()\n"
        "print('luod.kernel.sim' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
