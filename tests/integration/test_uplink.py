"""luod.net.uplink against real rtnetlink and sysfs, in a network namespace of the test's own:
the default route's link is found, and its return is seen within one sampling period."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from luod.net import uplink

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a network namespace",
)


def test_uplink_found_and_its_return_timed_in_a_namespace() -> None:
    probe = f"mount -t sysfs sysfs /sys && exec {sys.executable} -m tests.integration.uplink_probe"
    done = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["before"] is None  # a fresh namespace has no default route
    assert seen["uplink"] == "up0"
    assert seen["down_is_up"] is False
    assert seen["up"] is True
    assert seen["raised"] <= seen["seen"] <= seen["raised"] + 4 * uplink.POLL
    assert seen["absent"] is False and 0.2 <= seen["absent_after"] < 1.0
    assert seen["stopped"] is False and seen["stopped_after"] < 1.0
