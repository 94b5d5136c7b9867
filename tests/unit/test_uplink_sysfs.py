"""The uplink watch after a kexec reads the link's state from sysfs (luod.net.uplink): IFF_UP and
an operational state up or unknown, as rtnetlink's IFF_RUNNING; a link that is not there, or a
name that is not a link's, is not up; and no pyroute2 is imported for it (its import cost about
1 s of luod's GIL in a TCG guest while VMMs reclaimed)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from luod.net import uplink


def _link(links: Path, name: str, flags: str, operstate: str) -> None:
    (links / name).mkdir(parents=True, exist_ok=True)
    (links / name / "flags").write_text(f"{flags}\n")
    (links / name / "operstate").write_text(f"{operstate}\n")


def test_up_is_iff_up_and_running(tmp_path: Path) -> None:
    _link(tmp_path, "eth0", "0x1003", "up")
    _link(tmp_path, "nocarrier0", "0x1003", "lowerlayerdown")
    _link(tmp_path, "admin0", "0x1002", "down")
    _link(tmp_path, "tun0", "0x1091", "unknown")  # no operational state: running once up
    _link(tmp_path, "dormant0", "0x1003", "dormant")
    found = {n: uplink.is_up(n, tmp_path) for n in ("eth0", "nocarrier0", "admin0", "tun0")}
    assert found == {"eth0": True, "nocarrier0": False, "admin0": False, "tun0": True}
    assert uplink.is_up("dormant0", tmp_path) is False


def test_what_is_not_a_link_is_not_up(tmp_path: Path) -> None:
    _link(tmp_path / "sub", "eth0", "0x1003", "up")
    _link(tmp_path, "garbled0", "up", "up")
    assert not uplink.is_up("missing0", tmp_path)
    assert not uplink.is_up("garbled0", tmp_path)
    for name in ("sub/eth0", "..", ".", ""):
        assert not uplink.is_up(name, tmp_path), name


def test_wait_up_sees_the_link_come_within_one_period(tmp_path: Path) -> None:
    begin = time.monotonic()
    threading.Timer(0.2, _link, (tmp_path, "eth0", "0x1003", "up")).start()
    assert uplink.wait_up("eth0", 5.0, links=tmp_path) is True
    assert 0.2 <= time.monotonic() - begin < 0.2 + 4 * uplink.POLL


def test_wait_up_gives_up_or_is_stopped(tmp_path: Path) -> None:
    assert uplink.wait_up("eth0", 0.1, links=tmp_path) is False
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    begin = time.monotonic()
    assert uplink.wait_up("eth0", 30.0, stop, links=tmp_path) is False
    assert time.monotonic() - begin < 1.0
    assert uplink.wait_up("eth0", 1.0, links=tmp_path / "no-sysfs") is None


def test_the_watch_imports_no_pyroute2() -> None:
    code = (
        "import sys; from luod.net import uplink; uplink.wait_up('lo', 0.1); "
        "print(sorted(m for m in sys.modules if m.startswith('pyroute2')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
