"""Guest RAM stand-in: memfds with a deterministic pattern, a writer, and their digests."""

from __future__ import annotations

import hashlib
import os
import re
from typing import NamedTuple

from luod.kernel import OwnedFd, memfd

CHUNK = 1 << 20
_SIZE = re.compile(r"(\d+)([KMG]?)", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 4K, 64M)")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2).upper()]
    return int(match.group(1)) * scale


class RamRegion(NamedTuple):
    """(A NamedTuple, as the client's values: the demo VMM starts without ``dataclasses``.)"""

    name: str
    fd: OwnedFd
    size: int

    @classmethod
    def create(cls, vm: str, name: str, size: int) -> RamRegion:
        fd = memfd.create(f"{vm}-{name}", size)
        seed = hashlib.sha256(f"{vm}/{name}".encode()).digest()
        block = (seed * (CHUNK // len(seed)))[:CHUNK]
        for offset in range(0, size, CHUNK):
            os.pwrite(fd.fileno(), block[: min(CHUNK, size - offset)], offset)
        return cls(name, fd, size)

    def scribble(self, counter: int) -> None:
        """What a running guest does: keep changing its memory."""
        offset = (counter * 4096 * 13 + 64) % max(self.size - 8, 1)
        os.pwrite(self.fd.fileno(), counter.to_bytes(8, "little"), offset)

    def sha256(self) -> str:
        return digest(self.fd)


def digest(fd: OwnedFd) -> str:
    hasher = hashlib.sha256()
    size = os.fstat(fd.fileno()).st_size
    for offset in range(0, size, CHUNK):
        hasher.update(os.pread(fd.fileno(), min(CHUNK, size - offset), offset))
    return hasher.hexdigest()
