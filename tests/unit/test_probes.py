from __future__ import annotations

import struct
from pathlib import Path

from luod.kernel import probes


def fake_roots(tmp_path: Path, cmdline: str, device: bool, meta: bytes | None) -> probes.Roots:
    proc, sys, dev = tmp_path / "proc", tmp_path / "sys", tmp_path / "dev"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "cmdline").write_text(cmdline + "\n")
    (proc / "sys/kernel/osrelease").write_text("7.2.13-luo\n")
    dev.mkdir()
    if device:
        (dev / "liveupdate").write_text("")
    if meta is not None:
        blob = sys / "kernel/debug/kho/in/sub_fdts"
        blob.mkdir(parents=True)
        (blob / "kexec-metadata").write_bytes(meta)
    return probes.Roots(proc, sys, dev)


def metadata(release: str, count: int) -> bytes:
    return struct.pack("<I65sI", 1, release.encode(), count)


def test_cold_boot_without_luo(tmp_path: Path) -> None:
    info = probes.probe(fake_roots(tmp_path, "root=/dev/vda ro", False, None))
    assert not info.device_present and not info.liveupdate_param
    assert info.kho_enabled is None
    assert (info.liveupdate_number, info.previous_release, info.kexec_count) == (0, None, 0)
    assert info.release == "7.2.13-luo"


def test_kexec_boot_reads_kexec_metadata(tmp_path: Path) -> None:
    roots = fake_roots(tmp_path, "liveupdate=on kho=1", True, metadata("7.2.12-luo", 2))
    info = probes.probe(roots)
    assert info.device_present and info.liveupdate_param and info.kho_enabled
    assert (info.previous_release, info.kexec_count) == ("7.2.12-luo", 2)


def test_kexec_metadata_blob_is_73_bytes() -> None:
    assert len(metadata("x", 1)) == 73
    assert probes.parse_kexec_metadata(b"short") is None


def test_cmdline_flag_uses_kstrtobool_and_last_wins() -> None:
    assert probes.cmdline_flag("liveupdate=on", "liveupdate") is True
    assert probes.cmdline_flag("liveupdate=1 liveupdate=off", "liveupdate") is False
    assert probes.cmdline_flag("kho=Y", "kho") is True
    assert probes.cmdline_flag("liveupdate", "liveupdate") is None
    assert probes.cmdline_flag("xliveupdate=on", "liveupdate") is None
