"""The simulator's "kexec": how outgoing sessions cross into the next simulated boot.

At ``reboot`` every open outgoing session is written to ``STATE_DIR/handover/`` (contents read
at that moment, like the real kernel reading pinned pages at kexec); the next ``SimKernel`` on
the same directory moves it to ``STATE_DIR/incoming/`` and serves it as incoming sessions.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

FORMAT_VERSION: Final = 1
MEMFD_COMPATIBLE: Final = "memfd-v2"
KHO_COMPATIBLE: Final = "kho-v4"
LUO_COMPATIBLE: Final = "luo-v5"
_CHUNK: Final = 1 << 20


@dataclass(slots=True)
class FileRecord:
    token: int
    size: int
    pos: int
    seals: int
    data: str
    compatible: str = MEMFD_COMPATIBLE


@dataclass(slots=True)
class SessionRecord:
    name: str
    files: list[FileRecord] = field(default_factory=list)


@dataclass(slots=True)
class Handover:
    liveupdate_num: int
    cmdline: str
    previous_release: str
    kexec_count: int
    luo: bool = True
    poisoned: bool = False
    sessions: list[SessionRecord] = field(default_factory=list)
    kho_compatible: str = KHO_COMPATIBLE  # what the handing-over kernel wrote
    luo_compatible: str = LUO_COMPATIBLE
    image: str = ""  # the image it kexec'd into
    release: str | None = None  # the next boot's uname -r, from the image's header


def write_file(directory: Path, name: str, fd: int, size: int) -> None:
    """Copy ``size`` bytes of ``fd`` from offset 0 into ``directory/name``."""
    with open(directory / name, "wb") as out:
        offset = 0
        while offset < size:
            chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
            if not chunk:
                break
            out.write(chunk)
            offset += len(chunk)


def save(state_dir: Path, handover: Handover, staging: Path) -> None:
    """Atomically replace STATE_DIR/handover with ``staging`` plus its index."""
    data = asdict(handover)
    data["version"] = FORMAT_VERSION
    (staging / "handover.json").write_text(json.dumps(data, indent=1))
    target = state_dir / "handover"
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    _fsync_dir(state_dir)


def consume(state_dir: Path) -> tuple[Handover, Path] | None:
    """Take the handover left by the previous simulated kernel, if any."""
    source = state_dir / "handover"
    if not (source / "handover.json").exists():
        return None
    target = state_dir / "incoming"
    if target.exists():
        shutil.rmtree(target)
    os.replace(source, target)
    return _parse(json.loads((target / "handover.json").read_text())), target


def _parse(data: dict[str, Any]) -> Handover:
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"simulator handover version {data.get('version')} unsupported")
    sessions = [
        SessionRecord(s["name"], [FileRecord(**f) for f in s["files"]]) for s in data["sessions"]
    ]
    return Handover(
        liveupdate_num=int(data["liveupdate_num"]),
        cmdline=str(data["cmdline"]),
        previous_release=str(data["previous_release"]),
        kexec_count=int(data["kexec_count"]),
        luo=bool(data["luo"]),
        poisoned=bool(data["poisoned"]),
        sessions=sessions,
        kho_compatible=str(data.get("kho_compatible", KHO_COMPATIBLE)),
        luo_compatible=str(data.get("luo_compatible", LUO_COMPATIBLE)),
        image=str(data.get("image", "")),
        release=data.get("release"),
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
