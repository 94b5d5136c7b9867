"""A snapshot for the chaos matrix (tests/vm/test_chaos.py), in one process (every Python start
costs seconds under TCG): ``POINT``: luod's LIST and history over the VMM socket, and every LUO
session fd open in the guest by session name with the processes holding it (from /proc/PID/fd:
``anon_inode:[luo_session] NAME``, docs/kernel.md §4.1), as DIR/POINT-*.json. ``--held-only``:
the sessions alone (luod not serving)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from luod.vmm.client import Client

PREFIX = "anon_inode:[luo_session]"
SOCKET = "/run/luod/liveupdate.sock"


def held() -> dict[str, list[str]]:
    sessions: dict[str, list[str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
        except OSError:
            continue
        for link in links:
            if link.startswith(PREFIX):
                name = link[len(PREFIX) :].strip()
                sessions.setdefault(name, []).append(f"{proc.name} {command}")
    return sessions


def snapshot(directory: Path, point: str, held_only: bool = False) -> None:
    out: dict[str, object] = {"sessions": held()}
    if not held_only:
        with Client(SOCKET) as client:
            out["list"], out["history"] = client.list(), client.history()
        out["kexec-loaded"] = Path("/sys/kernel/kexec_loaded").read_text().strip()
    for name, value in out.items():
        (directory / f"{point}-{name}.json").write_text(json.dumps(value, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("point")
    parser.add_argument("--held-only", action="store_true")
    args = parser.parse_args()
    snapshot(args.directory, args.point, args.held_only)


if __name__ == "__main__":
    main()
