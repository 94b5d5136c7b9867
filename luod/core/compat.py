"""Gathers what the handover-ABI preflight compares (luod.core.abi): the running kernel's
debugfs and image, the next kernel's image, the fd kinds preserved, the qualifications on
record. Reading goes through luod.kernel; an image is decompressed once per (path, size,
mtime) and remembered (``ImageCache``), so a repeated preflight costs a stat per image.
"""

from __future__ import annotations

import resource
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from luod.core import abi, bzimage, qualified
from luod.kernel import Backend
from luod.kernel.images import Declared, ImageKey, image_key, read_image

CACHE_ENTRIES: Final = 8


class ImageCache:
    """ImageFacts (or why an image cannot be read) per image as it is on disk now."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._facts: OrderedDict[ImageKey, abi.ImageFacts | str] = OrderedDict()
        self.reads = 0  # images decompressed (the cost a cache hit avoids)

    def facts(self, path: Path) -> tuple[abi.ImageFacts | None, str]:
        """(facts, "") or (None, what went wrong, naming the path)."""
        try:
            key = image_key(path)
        except OSError as exc:
            return None, f"cannot read {path}: {exc.strerror or exc}"
        found = self._facts.get(key)
        if found is None:
            found = self._read(path)
            self._facts[key] = found
            while len(self._facts) > self.entries:
                self._facts.popitem(last=False)
        self._facts.move_to_end(key)
        return (found, "") if isinstance(found, abi.ImageFacts) else (None, found)

    def declared(self, path: Path) -> Declared | None:
        """What the image at ``path`` declares (the simulator's reader: luod.kernel._simabi)."""
        facts, _ = self.facts(path)
        return facts.declared if facts is not None else None

    def _read(self, path: Path) -> abi.ImageFacts | str:
        self.reads += 1
        try:
            return abi.image_facts(read_image(path))
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror or exc}"
        except bzimage.ImageError as exc:
            return f"{path}: {exc}"


CACHE: Final = ImageCache()


@dataclass(frozen=True)
class Assessment:
    running: abi.Side
    next: abi.Side
    kinds: frozenset[str]
    verdict: abi.Verdict
    qualification: abi.Verdict
    allow_unknown: bool

    def to_record(self) -> dict[str, Any]:
        """What the update's history keeps: both sides, the verdict, the override."""
        return {
            "status": self.verdict.status,
            "message": self.verdict.message,
            "override": self.allow_unknown and self.verdict.status == "warn",
            "kinds": sorted(self.kinds),
            "running": self.running.to_dict(),
            "next": self.next.to_dict(),
            "qualification": self.qualification.status,
        }


def assess(
    backend: Backend,
    kernel: Path | None,
    running_image: Path | None,
    file_kinds: Iterable[str],
    delegated: bool,
    allow_unknown: bool,
    history: Iterable[Mapping[str, Any]],
    cache: ImageCache = CACHE,
) -> Assessment:
    """``running_image`` None: where the platform says the running kernel's image is."""
    running = _running_side(backend, running_image, cache)
    if kernel is None:
        next_ = abi.next_side(None, "no next kernel given")
    else:
        next_ = abi.next_side(*cache.facts(kernel))
    kinds = abi.needed_kinds(file_kinds, delegated, running)
    record = qualified.find_qualification(history, running, next_)
    return Assessment(
        running,
        next_,
        frozenset(kinds),
        abi.verdict(running, next_, kinds, allow_unknown),
        qualified.qualification_verdict(record, running, next_),
        allow_unknown,
    )


def _running_side(backend: Backend, configured: Path | None, cache: ImageCache) -> abi.Side:
    info = backend.info()
    path = configured or backend.running_image()
    if path is None:
        facts, problem = None, "no image of the running kernel (set kexec.running_image)"
    else:
        facts, problem = cache.facts(path)
        if facts is None and configured is None:
            problem += " (set kexec.running_image to the running kernel's image)"
    return abi.running_side(
        info.release,
        info.version,
        resource.getpagesize(),
        backend.handover_blobs(),
        facts,
        problem,
    )
