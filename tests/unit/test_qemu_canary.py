"""The QEMU canary of a qualification (issue 14 §1): its guest's bytes, what its probe reads out
of guest RAM, the verdicts before and after a kexec, and the luod-qemu command lines."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from luod.core import qualify
from luod.qemu import canary

pytestmark = pytest.mark.unit


def guest_ram(stamp: int, counter: int, fill: bytes | None = None) -> bytes:
    """Guest RAM from COUNTER to the end of the fill, as the boot code leaves it."""
    low = bytearray(canary.FILL + canary.FILL_SIZE - canary.COUNTER)
    struct.pack_into("<I", low, 0, counter)
    struct.pack_into("<Q", low, canary.STAMP - canary.COUNTER, stamp)
    at = canary.MAGIC - canary.COUNTER
    low[at : at + 4] = canary.MAGIC_VALUE
    fill = canary.expected_fill(stamp) if fill is None else fill
    low[canary.FILL - canary.COUNTER :] = fill
    return bytes(low)


def test_the_floppy_is_one_boot_sector_and_nothing_else() -> None:
    image = canary.floppy_image()
    assert len(image) == canary.FLOPPY_SIZE
    assert image[510:512] == b"\x55\xaa" and len(canary.BOOT_CODE) == 78
    assert image[: len(canary.BOOT_CODE)] == canary.BOOT_CODE
    assert not any(image[512:])
    step = struct.pack("<I", canary.FILL_STEP)
    assert step in canary.BOOT_CODE  # the boot code's constant is the one the probe predicts


def test_the_pattern_is_the_stamp_plus_a_step_per_dword() -> None:
    fill = canary.expected_fill(0x1_FFFF_FFF0)  # only the stamp's low half counts
    assert len(fill) == canary.FILL_SIZE
    first, second = struct.unpack_from("<II", fill)
    assert first == 0xFFFF_FFF0 and second == (0xFFFF_FFF0 + canary.FILL_STEP) & 0xFFFFFFFF
    assert canary.expected_fill_sha256(1) != canary.expected_fill_sha256(2)


def test_the_probe_reads_counter_stamp_magic_and_the_pattern() -> None:
    seen = canary.observe(guest_ram(stamp=0x1234_5678_9ABC, counter=99))
    assert (seen["counter"], seen["stamp"], seen["magic"]) == (99, 0x1234_5678_9ABC, "LUOD")
    assert seen["fill_sha256"] == seen["fill_expected"] == canary.expected_fill_sha256(0x5678_9ABC)
    damaged = bytearray(canary.expected_fill(7))
    damaged[4096] ^= 1
    seen = canary.observe(guest_ram(stamp=7, counter=1, fill=bytes(damaged)))
    assert seen["fill_sha256"] == hashlib.sha256(damaged).hexdigest() != seen["fill_expected"]


def probed(stamp: int, counter: int, **changes: Any) -> dict[str, Any]:
    return {**canary.observe(guest_ram(stamp, counter)), "status": "running", **changes}


def test_a_canary_that_went_on_passes_every_check() -> None:
    before = probed(5, 40)
    checks = qualify.qemu_after(before, probed(5, 41), probed(5, 60))
    assert [c.result for c in checks] == ["pass"] * 6, checks
    went_on = next(c for c in checks if "went on" in c.name)
    assert (went_on.expected, went_on.actual) == (">= 40", "41")
    assert [c.result for c in qualify.qemu_before(probed(5, 1), probed(5, 20))] == ["pass"] * 3


@pytest.mark.parametrize(
    ("first", "second", "failed"),
    [
        (probed(6, 2), probed(6, 20), {"boot stamp (never reset)", "RAM pattern sha256",
                                       "counter went on from before the kexec"}),  # a reset
        (probed(5, 41), probed(5, 41), {"counter rises after the kexec"}),  # stopped
        (probed(5, 41), probed(5, 60, status="paused"), {"status"}),
        (probed(5, 41, magic="\0\0\0\0"), probed(5, 60), {"magic"}),
        (probed(5, 41, fill_sha256="00"), probed(5, 60), {"RAM pattern sha256"}),
    ],
)  # fmt: skip
def test_each_way_a_canary_can_come_back_wrong_fails_its_check(
    first: dict[str, Any], second: dict[str, Any], failed: set[str]
) -> None:
    checks = qualify.qemu_after(probed(5, 40), first, second)
    assert {c.name.removeprefix("qemu canary: ") for c in checks if c.result == "fail"} == failed
    for check in checks:
        assert check.expected and check.actual  # the report shows both


def test_a_probe_that_failed_is_one_failed_check_with_its_reason() -> None:
    [check] = qualify.qemu_after(probed(5, 40), {"error": "no QMP at /run/x"}, probed(5, 50))
    assert check.result == "fail" and "no QMP at /run/x" in check.actual


def test_run_and_restore_are_luod_qemu_commands(tmp_path: Path) -> None:
    probe = tmp_path / "q.qmp"
    common = ["--id", "luodq-1", "--dir", str(tmp_path), "--socket", "/run/l.sock"]
    run = canary.parser().parse_args(["run", *common, "--probe", str(probe)])
    argv = canary.luod_qemu_argv(run)
    assert argv[:8] == ["run", "--id", "luodq-1", "--socket", "/run/l.sock",
                        "--runtime-dir", str(tmp_path / "run"), "--ram"]  # fmt: skip
    assert argv[argv.index("--") + 1 :] == canary.qemu_args(tmp_path / "floppy.img", probe)
    assert (tmp_path / "floppy.img").read_bytes() == canary.floppy_image()
    assert f"unix:{probe},server=on,wait=off" in argv
    restore = canary.parser().parse_args(["restore", *common, "--runtime-dir", "/run/r"])
    assert canary.luod_qemu_argv(restore) == [
        "restore", "--id", "luodq-1", "--socket", "/run/l.sock", "--runtime-dir", "/run/r",
    ]  # fmt: skip


def test_a_probe_without_an_answer_is_one_failed_check_before_and_after() -> None:
    lost = {"error": "QMP: connection refused"}
    before = qualify.qemu_before(probed(5, 1), lost)
    after = qualify.qemu_after(probed(5, 20), lost, probed(5, 40))
    for checks in (before, after):
        assert [(c.name, c.result, c.actual) for c in checks] == [
            ("qemu canary: probed over QMP", "fail", "no: QMP: connection refused")
        ]


def test_a_probe_whose_reader_is_gone_exits_without_a_traceback(tmp_path: Path) -> None:
    """luod killed during a step: its probe's stdout pipe has no reader any more, and the
    probe's stderr is luod's log, where a traceback would read as luod's own."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "luod.qemu.canary", "probe",
             "--probe", str(tmp_path / "no.qmp"), "--dir", str(tmp_path)],
            stdout=write, stderr=subprocess.PIPE, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 1 and done.stderr == b""
