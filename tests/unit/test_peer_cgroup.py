"""The cgroup luod reads for each VMM connection (luod.kernel.charged.cgroup_of), from a
stand-in /proc: the v2 line, none without it, a path longer than one read, and a path that is
not UTF-8 (kept as the file system's bytes, where ``read_text`` raised)."""

from __future__ import annotations

import os
from pathlib import Path

from luod.kernel.charged import CGROUP_READ_BYTES, cgroup_of


def _proc(tmp_path: Path, content: bytes, pid: int = 42) -> Path:
    (tmp_path / str(pid)).mkdir(parents=True)
    (tmp_path / str(pid) / "cgroup").write_bytes(content)
    return tmp_path


def test_the_v2_line(tmp_path: Path) -> None:
    proc = _proc(tmp_path, b"1:name=systemd:/x\n0::/vm1.scope\n")
    assert cgroup_of(42, proc) == "/vm1.scope"


def test_the_root_and_no_v2_line(tmp_path: Path) -> None:
    assert cgroup_of(42, _proc(tmp_path / "a", b"0::\n")) == "/"
    assert cgroup_of(42, _proc(tmp_path / "b", b"9:pids:/\n8:memory:/x\n")) is None
    assert cgroup_of(43, tmp_path / "b") is None  # no such process


def test_a_path_longer_than_one_read(tmp_path: Path) -> None:
    deep = "/" + "/".join(["d" * 250] * (2 * CGROUP_READ_BYTES // 251))
    proc = _proc(tmp_path, b"12:pids:/\n0::" + deep.encode() + b"\n")
    assert cgroup_of(42, proc) == deep


def test_a_path_that_is_not_utf8_keeps_its_bytes(tmp_path: Path) -> None:
    proc = _proc(tmp_path, b"0::/vm-\xff.scope\n")
    found = cgroup_of(42, proc)
    assert found is not None and os.fsencode(found) == b"/vm-\xff.scope"


def test_this_process(tmp_path: Path) -> None:
    lines = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
    v2 = [line[3:] or "/" for line in lines if line.startswith("0::")]
    assert cgroup_of(os.getpid()) == (v2[0] if v2 else None)
