"""/dev/liveupdate itself (docs/kernel.md §3; selftests basic_open_close, exclusive_open)."""

from __future__ import annotations

import errno
import os

import pytest

from luod.kernel import LuoError
from luod.kernel.device import LuoDevice
from tests.contract.harness import Luo


def test_open_close(luo: Luo) -> None:
    with luo.opened() as device:
        assert device.fileno() >= 0


def test_second_open_is_ebusy(luo: Luo) -> None:
    platform = luo.backend.platform
    with luo.opened(), pytest.raises(OSError) as info:
        platform.open_device(luo.device.path).close()
    assert info.value.errno == errno.EBUSY


def test_busy_device_error_names_the_holder_after_bounded_retries(luo: Luo) -> None:
    slept: list[float] = []
    impatient = LuoDevice(luo.backend.platform, luo.device.path, (0.001, 0.002), slept.append)
    with luo.opened(), pytest.raises(LuoError) as info:
        impatient.create_session("never")
    assert info.value.errno == errno.EBUSY
    assert slept == [0.001, 0.002]
    assert f"pid {os.getpid()}" in info.value.hint


def test_reopen_after_close(luo: Luo) -> None:
    with luo.opened():
        pass
    with luo.opened() as device:
        assert device.fileno() >= 0


def test_sessions_survive_closing_the_device(luo: Luo) -> None:
    with luo.opened() as device:
        session = luo.own(device.create_session("outlives-device"))
    session.preserve(luo.memfd(b"x"), 1)
    assert session.name == "outlives-device"


def test_retrieve_session_on_cold_boot_is_enoent(luo: Luo) -> None:
    if luo.backend.info().liveupdate_number:
        pytest.skip("not a cold boot")
    with pytest.raises(LuoError) as info:
        luo.retrieve("never-preserved")
    assert info.value.errno == errno.ENOENT


def test_probe_reports_the_device_and_the_parameter(luo: Luo) -> None:
    info = luo.backend.info()
    assert info.device_present
    assert info.liveupdate_param
    assert info.kho_enabled
