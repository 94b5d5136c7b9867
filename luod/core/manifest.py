"""The manifest: luod's record of every VM, session, file and token, versioned JSON.

Written atomically to the state directory on every change, and — before a kexec — into a
sealed memfd preserved at token 0 of session ``luod``, because the kernel cannot list incoming
sessions or tokens (docs/kernel.md §2.4). Readers accept older versions and refuse newer ones.

The handoff is written in two steps, so that the VMs' pause holds only the second (issue 17):
before the freeze, the snapshot (serialized once, for the disk and token 0); after the last
READY, the changes since, as journal lines (the disk journal's format, ending with a ``kexec``
line that carries the update's record) at token 1 (``HANDOFF_JOURNAL_TOKEN``) and appended to
the disk journal. The kexec line gives the record as it was staged, encoded before the freeze,
and the record's change lines since (luod.core.record_lines): the pause encodes only those. A
luod that knows no token 1 reads token 0 alone: a complete version-1 manifest of every VM,
session and file as they were before the freeze.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from luod.core import jsontext, manifest_check, record_lines, statedir
from luod.core.kexec_journal import JOURNAL as JOURNAL
from luod.core.kexec_journal import KEXEC_LINE_START
from luod.core.model import VmRecord, VmState
from luod.errors import LuodError
from luod.kernel import OwnedFd, memfd

VERSION: Final = 1
MAX_VERSION: Final = 1 << 20
"""Beyond this a version number is corruption, not a newer luod."""
FILENAME: Final = "manifest.json"
SEALS: Final = memfd.F_SEAL_SHRINK | memfd.F_SEAL_GROW | memfd.F_SEAL_WRITE | memfd.F_SEAL_SEAL
"""Sealed read-only — but never F_SEAL_EXEC, which comes back write-sealed (docs/kernel.md §6.4)."""


@dataclass
class Manifest:
    boot_id: str
    release: str
    liveupdate_number: int
    vms: dict[str, VmRecord] = field(default_factory=dict)
    kexec_pending: bool = False
    written: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, encoded: Mapping[str, bytes] | None = None) -> bytes:
        """``encoded``: values of ``extra`` given as their ``jsontext.dumps`` bytes, encoded
        ahead (the staged update record, also the kexec line's): not encoded again here."""
        data = {
            "version": VERSION,
            "boot_id": self.boot_id,
            "release": self.release,
            "liveupdate_number": self.liveupdate_number,
            "kexec_pending": self.kexec_pending,
            "written": self.written,
            "vms": [vm.to_dict() for vm in self.vms.values()],
            "extra": self.extra,
        }
        if not encoded:
            return jsontext.dumps(data).encode()  # compact: a snapshot is on the pre-reboot path
        extra = b"".join(_object(self.extra, encoded))
        return b"".join(_object(data, {"extra": extra}))

    @classmethod
    def from_json(cls, raw: bytes, source: str) -> Manifest:
        """Every field checked for type and range (luod.core.manifest_check): anything else is
        ``manifest-corrupt`` naming the field, never a traceback (issue 13, finding 12)."""
        try:
            data = manifest_check.parse(raw)
            version = manifest_check.Reader(data, "").integer("version", 1, MAX_VERSION)
        except (ValueError, KeyError, TypeError) as exc:
            raise _corrupt(source, "unreadable manifest", exc) from exc
        if version > VERSION:
            raise LuodError(
                "manifest-too-new",
                f"{source}: manifest version {version}, this luod reads <= {VERSION}",
                "a newer luod wrote it: run that version (or newer) of luod",
            )
        try:
            return cls._checked(manifest_check.Reader(_upgrade(data, version), ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise _corrupt(source, "malformed manifest", exc) from exc

    @classmethod
    def _checked(cls, f: manifest_check.Reader) -> Manifest:
        vms: dict[str, VmRecord] = {}
        for index, item in enumerate(f.items("vms")):
            vm = manifest_check.vm_record(item, f"vms[{index}]")
            if vm.id in vms:
                raise manifest_check.Corrupt(f"vms[{index}]: VM {vm.id!r} listed twice")
            vms[vm.id] = vm
        return cls(
            boot_id=f.string("boot_id"),
            release=f.string("release"),
            liveupdate_number=f.integer("liveupdate_number", 0, manifest_check.U64_MAX),
            vms=vms,
            kexec_pending=f.boolean("kexec_pending", False),
            written=f.number("written", 0.0),
            extra=_extra(f),
        )


def _extra(f: manifest_check.Reader) -> dict[str, Any]:
    """``extra``; in a kexec line, its update record with the change lines after it applied
    (``kexec_line``)."""
    extra = f.mapping("extra", {})
    lines = f.items("update_lines", [])
    if lines and type(extra.get("update")) is dict:
        record_lines.apply_all(extra["update"], lines)
    if "update" in extra:
        manifest_check.carried_update(extra["update"], "extra.update")
    return extra


def _corrupt(source: str, what: str, exc: Exception) -> LuodError:
    return LuodError(
        "manifest-corrupt",
        f"{source}: {what} ({exc})",
        "keep the file for analysis; luod cannot map sessions without it",
    )


def _upgrade(data: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring an older manifest up to VERSION (one step per version; none yet)."""
    return data


def _merge_files(manifest: Manifest, entry: object) -> None:
    f = manifest_check.Reader(entry, "vm_files")
    vm = manifest.vms[f.string("id")]
    files = [manifest_check.file_record(d, "vm_files.files[]") for d in f.items("files")]
    vm.state = VmState(f.string("state"))
    vm.updated = f.number("updated")
    for record in files:
        vm.files[record.name] = record
        vm.rejected.pop(record.name, None)


def serialize(manifest: Manifest, encoded: Mapping[str, bytes] | None = None) -> bytes:
    """The snapshot's bytes, stamped now: one serialization serves every copy. ``encoded``:
    as ``Manifest.to_json``'s."""
    manifest.written = time.time()
    return manifest.to_json(encoded)


def write_atomic(state_dir: Path, manifest: Manifest, durable: bool = False) -> Path:
    """Write STATE_DIR/manifest.json so that a luod crash leaves the old or the new one.

    Not fsync'd per change: a crash of luod keeps the page cache, and a crash of the machine
    loses every preserved session anyway. ``durable`` syncs (the kexec path does).
    """
    return write_serialized(state_dir, serialize(manifest), durable)


def write_serialized(state_dir: Path, raw: bytes, durable: bool = False) -> Path:
    """``write_atomic`` of a snapshot already serialized (``serialize``)."""
    target = state_dir / FILENAME
    statedir.write_atomic(target, raw)  # 0600, no symlink followed
    statedir.unlink(state_dir / JOURNAL)  # the snapshot contains everything it said
    if durable:
        os.sync()
    return target


def journal_line(entry: dict[str, Any]) -> bytes:
    """One change (``{"vm": {...}}`` upsert, ``{"vm_files": ...}``, ``{"forget": id}``, or
    ``kexec_line``'s) as the journal's line."""
    return jsontext.dumps(entry).encode() + b"\n"


def kexec_line(
    extra: Mapping[str, object], encoded: Mapping[str, bytes], update_lines: Sequence[bytes] = ()
) -> bytes:
    """The handoff's last line, ``{"kexec":{"extra":extra,"update_lines":[...]}}``: the kexec
    is under way, with ``extra`` carried (the update's record); replayed, it sets
    ``kexec_pending`` and replaces ``extra``. The values of ``extra`` named in ``encoded`` are
    given as their text (``jsontext.dumps``): the update's record as staged before the freeze.
    ``update_lines``: that record's change lines since (as luod.core.record_lines.encode wrote
    them), which the reader applies to it; a luod that knows none reads the record as staged.
    Inside every VM's pause only they are encoded (issue 17), and the line is put together by
    one join, so that the record's text (225 KB at 1000 VMs) is copied once: under TCG each
    copy of it costs page faults. Byte for byte ``journal_line`` of the entry."""
    parts = [KEXEC_LINE_START, b'{"extra":', *_object(extra, encoded)]
    if update_lines:
        parts += (b',"update_lines":[', b",".join(update_lines), b"]")
    parts.append(b"}}\n")
    return b"".join(parts)


def _object(values: Mapping[str, object], encoded: Mapping[str, bytes]) -> list[bytes]:
    """``jsontext.dumps(values)`` as parts for one ``b"".join``, the values named in
    ``encoded`` given as those bytes: a long text encoded ahead is copied once, at the join."""
    parts = [b"{"]
    for key in sorted(values):
        text = encoded.get(key) or jsontext.dumps(values[key]).encode()
        parts += (b",", jsontext.dumps(key).encode(), b":", text)
    if len(parts) > 1:
        del parts[1]  # the first comma
    parts.append(b"}")
    return parts


def replay(manifest: Manifest, journal: bytes) -> Manifest:
    """Apply journal lines (the disk journal's, or the handoff's at token 1) to ``manifest``."""
    for line in journal.splitlines():
        try:
            _apply(manifest, manifest_check.parse(line))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a luod killed mid-append, or a line that fails
            # the manifest's own checks (manifest_check): neither is replayed
    return manifest


def _apply(manifest: Manifest, entry: object) -> None:
    if not isinstance(entry, dict):
        return
    if "vm" in entry:
        vm = manifest_check.vm_record(entry["vm"], "journal")
        manifest.vms[vm.id] = vm
    elif "vm_files" in entry:
        _merge_files(manifest, entry["vm_files"])
    elif "forget" in entry:
        manifest.vms.pop(str(entry["forget"]), None)
    elif "kexec" in entry:
        manifest.extra = _extra(manifest_check.Reader(entry["kexec"], "kexec"))
        manifest.kexec_pending = True


def _replay(state_dir: Path, manifest: Manifest) -> Manifest:
    journal = statedir.read(state_dir / JOURNAL)
    return manifest if journal is None else replay(manifest, journal)


def read_disk(state_dir: Path) -> Manifest | None:
    path = state_dir / FILENAME
    try:
        raw = statedir.read(path)
    except OSError as exc:  # a symlink, a FIFO: never followed, never waited on
        raise LuodError(
            "manifest-unreadable",
            f"cannot read {path}: {exc.strerror or exc}",
            "it must be a regular file of luod's (not a symlink): move it aside and look at "
            "who put it there",
            exc.errno,
        ) from exc
    if raw is None:
        return None
    return _replay(state_dir, Manifest.from_json(raw, str(path)))


def to_memfd(raw: bytes, name: str = "luod-manifest") -> OwnedFd:
    """A sealed memfd holding ``raw`` (the snapshot, or the handoff's journal), ready for
    PRESERVE_FD."""
    fd = memfd.create(name, len(raw))
    try:
        os.pwrite(fd.fileno(), raw, 0)
        memfd.add_seals(fd, SEALS)
    except BaseException:
        fd.close()
        raise
    return fd


def zeroed_memfd(size: int, name: str) -> OwnedFd:
    """A memfd of ``size`` zero bytes, its size sealed but not its contents: PRESERVE_FD
    allocates and pins every page of it, so that a write after it lands in preserved pages
    (docs/kernel.md §6.2)."""
    fd = memfd.create(name, size)
    try:
        memfd.add_seals(fd, memfd.F_SEAL_SHRINK | memfd.F_SEAL_GROW | memfd.F_SEAL_SEAL)
    except BaseException:
        fd.close()
        raise
    return fd


def read_fd(fd: OwnedFd) -> bytes:
    return os.pread(fd.fileno(), os.fstat(fd.fileno()).st_size, 0)


def from_fd(fd: OwnedFd) -> Manifest:
    return Manifest.from_json(read_fd(fd), "manifest memfd (session luod)")
