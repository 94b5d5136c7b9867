"""The handover-ABI preflight through a running luod on the simulator: an incompatible next
kernel is refused naming both strings, an unreadable one is refused unless the operator
overrides (and the history keeps the override), a qualification on record silences the
warning, and a kexec forced past luod into the incompatible kernel panics the next boot."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from luod.core import compat
from luod.errors import LuodError
from luod.kernel import _simimage, memfd
from luod.kernel.sim import SimulatedKexec, sim_backend
from luod.vmm.client import Client
from tests.bzimages import B_7_3, B_ABI_V6, bzimage
from tests.integration.conftest import Daemon, start_daemon


def image(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def checks(daemon: Daemon, kernel: Path, **options: object) -> dict[str, dict[str, str]]:
    with Client(daemon.socket) as client:
        reply = client.update(kernel, dry_run=True, **options)
    return {c["id"]: c for c in reply["checks"]}


def handed_over(daemon: Daemon) -> None:
    with Client(daemon.socket) as client, memfd.create("ram", 4096) as fd:
        client.register("vm1")
        client.preserve("vm1", {"ram0": fd})


def test_abi_v6_is_refused_naming_both_strings(daemon: Daemon, tmp_path: Path) -> None:
    handed_over(daemon)
    v6 = image(tmp_path, "abi-v6", bzimage(B_ABI_V6))
    found = checks(daemon, v6, allow_unknown_abi=True)["handover-abi"]
    assert found["status"] == "fail"
    assert "'luo-v5' (running 7.2.13-luodsim #1) vs 'luo-v6' (next 7.3.4 #2)" in found["message"]
    with Client(daemon.socket) as client, pytest.raises(LuodError) as refused:
        client.update(v6, wait=True)
    assert refused.value.code == "preflight-failed" and "handover-abi" in refused.value.message
    assert "luo-v6" in refused.value.hint
    with Client(daemon.socket) as client:
        assert client.status()["phase"] == "idle"
        [record] = client.history()
        assert client.list()[0]["state"] == "preserved"  # nothing was touched
    assert record["outcome"] == "refused"
    assert record["request"]["handover_abi"]["next"]["luo"] == "luo-v6"
    assert record["request"]["handover_abi"]["running"]["luo"] == "luo-v5"


def test_compatible_next_kernel_passes_and_warns_without_qualification(
    daemon: Daemon, tmp_path: Path
) -> None:
    b = image(tmp_path, "b", bzimage(B_7_3))
    found = checks(daemon, b)
    assert found["handover-abi"]["status"] == "pass"
    assert found["handover-abi"]["message"].startswith("kho-v4, luo-v5, memfd-v2 on both sides")
    assert found["qualified"]["status"] == "warn"
    qualification = {
        "kind": "qualification",
        "id": "q-hand-made",
        "outcome": "passed",
        "chain": [{"release": "7.2.13-luodsim"}, {"release": "7.3.4", "version": B_7_3.version}],
    }
    with open(daemon.state / "history.jsonl", "a") as history:
        history.write(json.dumps(qualification) + "\n")
    found = checks(daemon, b)
    assert found["qualified"]["status"] == "pass" and "q-hand-made" in found["qualified"]["message"]


def test_unknown_compression_refused_then_overridden_and_recorded(tmp_path: Path) -> None:
    odd = image(tmp_path, "odd", _simimage.bzimage(B_7_3, lambda d: b"\x12\x34\x56\x78" + d))
    daemon = start_daemon(tmp_path / "luod")
    try:
        found = checks(daemon, odd)["handover-abi"]
        assert found["status"] == "fail" and "unknown compression" in found["message"]
        found = checks(daemon, odd, allow_unknown_abi=True)["handover-abi"]
        assert found["status"] == "warn" and "operator override" in found["message"]
        with Client(daemon.socket) as client, contextlib.suppress(LuodError, ConnectionError):
            client.update(odd, wait=True, allow_unknown_abi=True)  # no VMs: straight to kexec
        assert daemon.process.wait(timeout=20) == 0, daemon.log.read_text()
    finally:
        daemon.stop()
    restarted = start_daemon(tmp_path / "luod")
    try:
        with Client(restarted.socket) as client:
            [record] = client.history()
    finally:
        restarted.stop()
    assert record["outcome"] == "completed"
    assert record["request"]["allow_unknown_abi"] is True
    assert record["request"]["handover_abi"]["override"] is True


def test_a_kexec_forced_past_luod_into_abi_v6_panics_the_next_boot(tmp_path: Path) -> None:
    state = tmp_path / "luod"
    backend = sim_backend(state / "kernel", read_abi=compat.ImageCache().declared)
    session = backend.device.create_session("forced")
    with memfd.create("ram", 4096) as ram:
        session.preserve(ram, 1)
    v6 = image(tmp_path, "abi-v6", bzimage(B_ABI_V6))
    backend.load_kernel(v6, cmdline=backend.info().cmdline)
    with pytest.raises(SimulatedKexec):
        backend.reboot_kexec()
    log = state / "luod.log"
    with pytest.raises(AssertionError, match="luod did not start"):
        start_daemon(state)  # luod's "machine" panics while booting: no luod
    assert "LUO state is incompatible with 'luo-v6'" in log.read_text()
    assert "Kernel panic - not syncing" in log.read_text()
    assert os.path.exists(state / "kernel")
