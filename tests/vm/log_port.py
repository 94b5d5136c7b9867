"""A log sink for luod in the test guest that costs what a host's journal costs: a virtio-serial
port, whose host side is a file on the share (``PORT_FILE``).

A line written to a file on the 9p share waits for QEMU's 9p worker, a host thread that competes
with the guest's two vCPU threads for the host's two cores: 0.55 ms a line after a 30 ms lull in
the bench's guest, where a pipe (journald's stream socket stands for it) takes 0.11 ms and the
port 0.12 ms (bench/NOTES.md). Each of luod's log lines in a VM's pause paid that wait. A write to
the port is on the host when write(2) returns, as a 9p write is: a kexec right after it loses
nothing, where a forwarder reading a pipe would race the reboot.

One port serves a whole run: the guest opens it once a process (the port takes one opener), and
every luod spawned writes under a marker line naming its log (``{"log_section": "luod-2"}``).
``sections`` splits the file again; ``split`` writes each section beside it as ``NAME.log``, as
the benches wrote them before, once the run is over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

PORT_NAME = "luod-log"
PORT_FILE = "port-luod.log"
MARKER = "log_section"
_opened: dict[str, BinaryIO] = {}


def qemu_args(share: Path) -> list[str]:
    """The port's device, with its host side in ``share`` (the file is made empty)."""
    chardev = f"file,id=luodlog,path={share / PORT_FILE}"
    return [
        *("-device", "virtio-serial-pci", "-chardev", chardev),
        *("-device", f"virtserialport,chardev=luodlog,name={PORT_NAME}"),
    ]


def device(ports: Path = Path("/sys/class/virtio-ports")) -> Path | None:
    """In the guest: the port's device node, or None when the guest has no such port."""
    for entry in sorted(ports.glob("*")):
        try:
            if (entry / "name").read_text().strip() == PORT_NAME:
                return Path("/dev") / entry.name
        except OSError:
            continue
    return None


def sink(name: str, fallback: Path) -> BinaryIO:
    """Where a process about to be spawned logs: the port (opened once, unbuffered) after a
    marker line naming ``name``, or ``fallback/NAME.log`` in a guest without the port."""
    node = device()
    if node is None:
        return (fallback / f"{name}.log").open("ab")
    port = _opened.get(str(node))
    if port is None:
        port = _opened[str(node)] = open(node, "wb", buffering=0)  # noqa: SIM115 (kept open)
    port.write(json.dumps({MARKER: name}).encode() + b"\n")
    return port


def sections(text: str) -> dict[str, str]:
    """The port file's lines by the marker before them (lines before any marker: dropped)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        name = _marker(line)
        if name is not None:
            current = found.setdefault(name, [])
        elif current is not None:
            current.append(line)
    return {name: "".join(lines) for name, lines in found.items()}


def read(share: Path, name: str) -> str:
    """Log ``name``'s text: its section of the port file, else ``share/NAME.log``."""
    port = share / PORT_FILE
    if port.exists():
        text = sections(port.read_text(errors="replace")).get(name)
        if text is not None:
            return text
    return (share / f"{name}.log").read_text(errors="replace")


def split(share: Path) -> list[Path]:
    """After the run, on the host: each section as ``share/NAME.log`` (appended to any)."""
    port = share / PORT_FILE
    if not port.exists():
        return []
    written = []
    for name, text in sections(port.read_text(errors="replace")).items():
        path = share / f"{name}.log"
        with path.open("a") as out:
            out.write(text)
        written.append(path)
    return written


def _marker(line: str) -> str | None:
    if MARKER not in line:
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    name = entry.get(MARKER) if isinstance(entry, dict) and len(entry) == 1 else None
    return os.path.basename(name) if isinstance(name, str) else None
