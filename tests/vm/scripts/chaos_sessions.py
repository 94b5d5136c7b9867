"""Every LUO session fd open in the guest, by session name, with the processes holding it
(from /proc/PID/fd: ``anon_inode:[luo_session] NAME``, docs/kernel.md §4.1). Prints JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

PREFIX = "anon_inode:[luo_session]"


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


if __name__ == "__main__":
    print(json.dumps(held(), indent=1, sort_keys=True))
