"""Preflight refusals, each through a running luod: the refusal names the check and its hint,
nothing is changed, and the daemon keeps serving."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from luod.errors import LuodError
from luod.kernel import OwnedFd, memfd
from luod.vmm.client import Client
from tests.contract.harness import FAKE_BZIMAGE
from tests.integration.conftest import Daemon, start_daemon


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "bzImage"
    path.write_bytes(FAKE_BZIMAGE)
    return path


def refusal(daemon: Daemon, kernel: Path, **options: object) -> LuodError:
    with Client(daemon.socket) as client, pytest.raises(LuodError) as info:
        client.update(kernel, wait=True, **options)
    assert info.value.code == "preflight-failed"
    with Client(daemon.socket) as client:
        assert client.status()["phase"] == "idle"
    return info.value


def handed_over(daemon: Daemon) -> None:
    with Client(daemon.socket) as client, memfd.create("ram", 4096) as fd:
        client.register("vm1")
        client.preserve("vm1", {"ram0": fd})


def test_next_cmdline_without_liveupdate_is_refused(daemon: Daemon, image: Path) -> None:
    handed_over(daemon)
    error = refusal(daemon, image, cmdline="console=ttyS0 kho=on")
    assert "next-cmdline" in error.message and "liveupdate=on" in error.hint


def test_a_non_kernel_image_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    handed_over(daemon)
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a kernel" * 100)
    error = refusal(daemon, junk)
    assert "kernel-image" in error.message and "bzImage" in error.hint


def test_a_hugetlb_memfd_is_refused(daemon: Daemon, image: Path) -> None:
    with Client(daemon.socket) as client:
        client.register("huge")
        huge = OwnedFd(os.memfd_create("huge", memfd.MFD_HUGETLB | memfd.MFD_CLOEXEC))
        with huge, pytest.raises(LuodError) as info:
            client.preserve("huge", {"ram0": huge})
    assert info.value.code == "luo-enoent" and "hugetlb" in info.value.hint
    error = refusal(daemon, image)
    assert "files" in error.message and "hugetlb" in error.hint


def test_no_device_is_refused(tmp_path: Path, image: Path) -> None:
    daemon = start_daemon(tmp_path / "luod", "--sim-cmdline", "console=ttyS0")
    try:
        error = refusal(daemon, image)
        assert "device" in error.message and "liveupdate=on" in error.hint
        with Client(daemon.socket) as client, pytest.raises(LuodError) as info:
            client.register("vm1")
        assert info.value.code == "luo-enoent"
    finally:
        daemon.stop()
