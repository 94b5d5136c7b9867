"""Qualification canaries (issue 14 §1): what to preserve, what its bytes are, what must come back.

Pure: a plan of canary sessions and files in, their exact contents (as 64 KiB blocks) and the
checks of what was observed after the kexec out. The driver (luod.daemon.qualification) does
the I/O. Every canary's content is a function of its seed, so the expected sha256 is computed
here, never read back from the file it judges.

What the plan covers (docs/kernel.md §6): memfds of several sizes (one large, ≥ 256 MiB by
default); sealed memfds and ``MFD_NOEXEC_SEAL`` (whose seals come back expanded, §6.4); sparse
memfds whose holes must read as zeros (§6.2: preserve populates them); writes after preserve
inside the frozen size (§6.2), one of them into a former hole; an empty session; one session
with more files than a block of records holds (§9); many sessions, one of them named at the
63-byte limit (§9).
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

BLOCK: Final = 64 * 1024
NAME_LIMIT: Final = 63  # session names (docs/kernel.md §9)
PREFIX: Final = "luodq."
"""Canary sessions are ``luodq.<qualification id>.<label>``; VM sessions are ``luod.<vm id>``:
two namespaces, so no VMM can claim a canary and no canary is taken for a VM."""
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8
F_SEAL_FUTURE_WRITE, F_SEAL_EXEC = 0x10, 0x20
EXEC_SEAL_IMPLIES: Final = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE
MIB: Final = 1024 * 1024


@dataclass(frozen=True)
class Options:
    """How big the canaries are. ``large_mib``: the large memfd (issue 14 asks ≥ 256; the VM
    tier uses less); ``many_files``: files in one session (63 fill one record block);
    ``sessions``: extra one-file sessions, bounded by luod's session limit (``limit``)."""

    large_mib: int = 256
    many_files: int = 130
    sessions: int = 16

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Options:
        return cls(**{k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CanaryFile:
    label: str
    token: int
    size: int
    seed: int
    noexec: bool = False  # created with MFD_NOEXEC_SEAL
    seals: int = 0  # added before preserve
    holes: tuple[int, ...] = ()  # blocks never written before preserve
    late: tuple[int, ...] = ()  # blocks (over)written after preserve, inside the size

    @property
    def blocks(self) -> int:
        return -(-self.size // BLOCK)

    def seals_at_preserve(self) -> int:
        return self.seals | (F_SEAL_EXEC if self.noexec else 0)

    def seals_after(self) -> int:
        """F_SEAL_EXEC on the retrieved 0777 inode implies the write seals (§6.4)."""
        seals = self.seals_at_preserve()
        return seals | EXEC_SEAL_IMPLIES if seals & F_SEAL_EXEC else seals

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "holes": list(self.holes), "late": list(self.late)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryFile:
        return cls(**{**data, "holes": tuple(data["holes"]), "late": tuple(data["late"])})


@dataclass(frozen=True)
class CanarySession:
    name: str
    files: tuple[CanaryFile, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "files": [f.to_dict() for f in self.files]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanarySession:
        return cls(str(data["name"]), tuple(CanaryFile.from_dict(f) for f in data["files"]))


def session_name(qid: str, label: str, pad_to: int = 0) -> str:
    name = f"{PREFIX}{qid}.{label}"
    return name + "x" * max(0, pad_to - len(name))


def plan(qid: str, options: Options, limit: int) -> list[CanarySession]:
    """The canary sessions of one chain step. ``limit``: how many more sessions luod may hold
    (its fd limit less what it holds, as preflight check ``limits`` counts)."""
    rng = random.Random(qid)
    seed = rng.getrandbits  # a fresh seed per file, reproducible from the id

    def file(label: str, token: int, size: int, **kw: Any) -> CanaryFile:
        return CanaryFile(label, token, size, seed(48), **kw)

    large = options.large_mib * MIB
    mixed = (
        file("tiny", 1, 4096),
        file("odd", 2, 3 * BLOCK + 123),
        file("mid", 3, 8 * MIB, late=(5,)),
        file("large", 4, large, holes=_every(large, 7), late=(7, 1)),
        file("sealed", 5, MIB, seals=F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL),
        file("noexec", 6, MIB, noexec=True, late=(3,)),
        file("sparse", 7, 4 * MIB, holes=(0, 2, 3, 10, 63), late=(2,)),
    )
    sessions = [
        CanarySession(session_name(qid, "mixed"), mixed),
        CanarySession(session_name(qid, "empty")),
        CanarySession(
            session_name(qid, "many"),
            tuple(file(f"f{i}", i + 1, 4096) for i in range(options.many_files)),
        ),
    ]
    room = max(0, limit - len(sessions))
    for n in range(min(options.sessions, room)):
        label = f"s{n}"
        name = session_name(qid, label, NAME_LIMIT if n == 0 else 0)
        sessions.append(CanarySession(name, (file(label, 1, 4096),)))
    return sessions


def _every(size: int, step: int) -> tuple[int, ...]:
    """Every ``step``-th block of a file of ``size`` bytes, from block 3: a sparse large file."""
    return tuple(range(3, -(-size // BLOCK), step))


# --- contents ------------------------------------------------------------------------------------
def block(canary: CanaryFile, index: int, late: bool = False) -> bytes:
    """Block ``index`` as written (before preserve; ``late``: the bytes written after)."""
    length = min(BLOCK, canary.size - index * BLOCK)
    if index in canary.holes and not late:
        return bytes(length)
    base = _base(canary.seed)
    stamp = struct.pack("<QQ", canary.seed ^ (0xFFFF if late else 0), index)
    return (stamp + base[len(stamp) :])[:length]


@functools.lru_cache(maxsize=64)
def _base(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


def final_block(canary: CanaryFile, index: int) -> bytes:
    """Block ``index`` as it must read after the kexec."""
    return block(canary, index, late=index in canary.late)


def expected_sha256(canary: CanaryFile) -> str:
    digest = hashlib.sha256()
    for index in range(canary.blocks):
        digest.update(final_block(canary, index))
    return digest.hexdigest()


def blocks_before(canary: CanaryFile) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) to write before preserve: every block that is not a hole."""
    for index in range(canary.blocks):
        if index not in canary.holes:
            yield index * BLOCK, block(canary, index)


def blocks_after(canary: CanaryFile) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) to write after preserve (inside the frozen size, §6.2)."""
    for index in canary.late:
        yield index * BLOCK, block(canary, index, late=True)


# --- verdicts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    name: str
    result: str  # pass | fail
    expected: str
    actual: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def check(name: str, expected: object, actual: object) -> Check:
    result = "pass" if expected == actual else "fail"
    return Check(name, result, _shown(expected), _shown(actual))


def at_least(name: str, floor: int, actual: object) -> Check:
    """Passes when ``actual`` is an integer ≥ ``floor``."""
    good = isinstance(actual, int) and not isinstance(actual, bool) and actual >= floor
    return Check(name, "pass" if good else "fail", f">= {floor}", str(actual))


def _shown(value: object) -> str:
    return hex(value) if isinstance(value, int) and not isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Observed:
    """One retrieved canary, as the driver measured it."""

    size: int
    seals: int
    sha256: str
    nonzero_holes: tuple[int, ...]  # hole blocks (never rewritten) that did not read as zeros


def verify_file(session: str, canary: CanaryFile, seen: Observed) -> list[Check]:
    where = f"{session}/{canary.label}"
    checks = [
        check(f"{where}: size", canary.size, seen.size),
        check(f"{where}: seals", canary.seals_after(), seen.seals),
        check(f"{where}: sha256", expected_sha256(canary), seen.sha256),
    ]
    if set(canary.holes) - set(canary.late):
        checks.append(check(f"{where}: holes read as zeros", "()", str(seen.nonzero_holes)))
    return checks


def zero_holes(canary: CanaryFile) -> frozenset[int]:
    """Hole blocks that must still read as zeros (not rewritten after preserve)."""
    return frozenset(canary.holes) - frozenset(canary.late)


# --- the QEMU canary (luod.daemon.qualification_qemu runs it; luod.qemu.canary probes it) -----
QEMU = "qemu canary"


def _probe_failed(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[Check]:
    """The one failed check when either probe of a pair got no answer over QMP, else none."""
    if "error" not in first and "error" not in second:
        return []
    error = first.get("error") or second.get("error")
    return [check(f"{QEMU}: probed over QMP", "yes", f"no: {error}")]


def qemu_before(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[Check]:
    """Two probes of the canary guest before the kexec: its boot code ran, its pattern is the
    one its stamp predicts, it runs."""
    if failed := _probe_failed(first, second):
        return failed
    return [
        check(f"{QEMU}: magic before the kexec", "LUOD", second["magic"]),
        check(
            f"{QEMU}: RAM pattern before the kexec", second["fill_expected"], second["fill_sha256"]
        ),
        at_least(
            f"{QEMU}: counter rises before the kexec", first["counter"] + 1, second["counter"]
        ),
    ]


def qemu_after(
    before: Mapping[str, Any], first: Mapping[str, Any], second: Mapping[str, Any]
) -> list[Check]:
    """The canary guest after the kexec, against its last probe before it: its RAM intact
    (magic; the pattern the stamp of before predicts), never reset (the same boot stamp),
    running on (the counter went on from before the kexec and still rises)."""
    if failed := _probe_failed(first, second):
        return failed
    return [
        check(f"{QEMU}: magic", "LUOD", first["magic"]),
        check(f"{QEMU}: boot stamp (never reset)", before["stamp"], first["stamp"]),
        check(f"{QEMU}: RAM pattern sha256", before["fill_expected"], first["fill_sha256"]),
        at_least(
            f"{QEMU}: counter went on from before the kexec", before["counter"], first["counter"]
        ),
        at_least(f"{QEMU}: counter rises after the kexec", first["counter"] + 1, second["counter"]),
        check(f"{QEMU}: status", "running", second["status"]),
    ]
