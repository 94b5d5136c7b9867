"""``luoctl qualify`` through a running luod on the simulator (issue 14 §1): the chain
A,B,A with canaries checked after each simulated kexec, the report in the history and over
REST, the JUnit export, and the refusals (VMs preserved, a chain not starting with A)."""

from __future__ import annotations

import io
import json
import os
import stat
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from luod.cli.main import main as luoctl
from luod.kernel import _simabi, memfd
from luod.vmm.client import Client
from tests.bzimages import B_7_3, B_ABI_V6, bzimage
from tests.integration.conftest import Daemon, start_daemon

SMALL = ["--large-mib", "4", "--many-files", "70", "--sessions", "3"]  # the sim copies bytes


def ctl(daemon: Daemon, *argv: str) -> tuple[int, Any]:
    out, err = io.StringIO(), io.StringIO()
    api = daemon.state / "run" / "api.sock"
    code = luoctl(["--socket", str(api), "--json", *argv], out=out, err=err)
    text = out.getvalue().strip()
    return code, json.loads(text) if text else err.getvalue()


def api_daemon(state: Path) -> Daemon:
    daemon = start_daemon(state, api=True)
    deadline = time.monotonic() + 20
    while not (state / "run" / "api.sock").exists():
        assert time.monotonic() < deadline and daemon.alive(), daemon.log.read_text()
        time.sleep(0.05)
    return daemon


def kexeced(daemon: Daemon) -> None:
    """luod on the simulator outlives nothing: the kexec ends it (exit 0)."""
    assert daemon.process.wait(timeout=120) == 0, daemon.log.read_text()


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    b = tmp_path / "bzImage-7.3.4"
    b.write_bytes(bzimage(B_7_3))
    return _simabi.installed_native_image(tmp_path / "luod" / "kernel"), b


def test_chain_a_b_a_checks_every_canary_and_records_the_report(
    tmp_path: Path, images: tuple[Path, Path]
) -> None:
    state = tmp_path / "luod"
    a, b = images
    daemon = api_daemon(state)
    code, started = ctl(daemon, "qualify", "start", "--chain", f"{a},{b},{a}", *SMALL)
    assert code == 0, started
    assert started["outcome"] == "running"
    assert [k["release"] for k in started["chain"]] == ["7.2.13-luodsim", "7.3.4", "7.2.13-luodsim"]
    kexeced(daemon)  # A → B
    assert stat.S_IMODE((state / "qualification.json").stat().st_mode) == 0o600  # state policy
    kexeced(start_daemon(state))  # B verifies, then B → A
    last = api_daemon(state)
    try:
        deadline = time.monotonic() + 60
        while (record := ctl(last, "qualify", "show")[1])["outcome"] == "running":
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
        junit = tmp_path / "q.xml"
        code, shown = ctl(last, "qualify", "show", record["id"], "--junit", str(junit))
        _, history = ctl(last, "history")
        with Client(last.socket) as client:
            updates = [h for h in client.history() if h.get("kind") != "qualification"]
    finally:
        last.stop()
    assert code == 0 and shown["outcome"] == "passed", shown
    first, second = shown["steps"]
    assert (first["from_release"], first["to_release"]) == ("7.2.13-luodsim", "7.3.4")
    assert (second["from_release"], second["to_release"]) == ("7.3.4", "7.2.13-luodsim")
    assert (first["liveupdate_number"], second["liveupdate_number"]) == (1, 2)
    for step in (first, second):
        names = {c["name"]: c for c in step["checks"]}
        assert all(c["result"] == "pass" for c in step["checks"]), step
        noexec = next(c for n, c in names.items() if n.endswith("/noexec: seals"))
        assert noexec["expected"] == noexec["actual"] == "0x3e"  # F_SEAL_EXEC expanded
        assert any(n.endswith("/sparse: holes read as zeros") for n in names)
        assert any(n.endswith("/large: sha256") for n in names)
        assert any(".empty: finished" in n for n in names)
        assert sum(n.endswith(": sha256") and "/f" in n for n in names) == 70
        assert {"kernel: release", "kernel: version", "kernel: liveupdate number"} <= set(names)
        assert names["update: outcome"]["actual"] == "completed"
        timed = {k for k, v in step["timings"].items() if v is not None}
        assert timed == {"canaries_seconds", "kexec_seconds", "verify_seconds"}  # no QEMU canary
    assert first["update"] == updates[0]["id"] and second["update"] == updates[1]["id"]
    assert history["history"] and all(h["kind"] == "update" for h in history["history"])
    suites = ET.parse(junit).getroot()
    assert [s.get("name") for s in suites] == ["7.2.13-luodsim -> 7.3.4", "7.3.4 -> 7.2.13-luodsim"]
    assert all(s.get("failures") == "0" and int(s.get("tests", 0)) > 90 for s in suites)


def test_refused_while_vms_are_preserved_unless_with_vms(
    tmp_path: Path, images: tuple[Path, Path]
) -> None:
    a, b = images
    daemon = api_daemon(tmp_path / "luod")
    try:
        with Client(daemon.socket) as client, memfd.create("ram", 4096) as fd:
            client.register("vm1")
            client.preserve("vm1", {"ram0": fd})
        code, problem = ctl(daemon, "qualify", "start", "--chain", f"{a},{b}", *SMALL)
        assert code == 1 and problem["code"] == "vms-preserved" and "vm1" in problem["detail"]
        assert "--with-vms" in problem["hint"]
        code, problem = ctl(daemon, "qualify", "start", "--chain", f"{b},{a}", "--with-vms")
        assert (
            code == 1 and problem["code"] == "bad-chain" and "7.2.13-luodsim" in problem["detail"]
        )
        code, listed = ctl(daemon, "qualify", "list")
        assert code == 0 and listed == {"qualifications": []}
        code, problem = ctl(daemon, "qualify", "show", "abc123")
        assert code == 1 and problem["code"] == "unknown-qualification"
        assert problem["status"] == 404
        with Client(daemon.socket) as client:
            assert [v["id"] for v in client.list()] == ["vm1"]  # canaries never show as VMs
    finally:
        daemon.stop()


def test_a_damaged_canary_fails_the_qualification_naming_the_check(
    tmp_path: Path, images: tuple[Path, Path]
) -> None:
    """One byte of the biggest canary ("mid", 8 MiB at these sizes) flipped in the simulated
    handover: that file's sha256 check fails (expected and actual shown), the chain stops
    there, the report says so."""
    state = tmp_path / "luod"
    a, b = images
    daemon = api_daemon(state)
    code, started = ctl(daemon, "qualify", "start", "--chain", f"{a},{b},{a}", *SMALL)
    assert code == 0, started
    kexeced(daemon)
    handed = max((p for p in (state / "kernel").rglob("*") if p.is_file()), key=os.path.getsize)
    with open(handed, "r+b") as data:
        data.seek(12345)
        byte = data.read(1)
        data.seek(12345)
        data.write(bytes([byte[0] ^ 0xFF]))
    after = api_daemon(state)
    try:
        deadline = time.monotonic() + 60
        while (record := ctl(after, "qualify", "show")[1])["outcome"] == "running":
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
        code, shown = ctl(after, "qualify", "show", "--junit", str(tmp_path / "q.xml"))
        assert after.alive()  # nothing kexeced: the chain stopped at the failure
    finally:
        after.stop()
    assert code == 1 and shown["outcome"] == "failed"
    [step] = shown["steps"]
    failed = [c for c in step["checks"] if c["result"] == "fail"]
    assert [c["name"].rsplit("/", 1)[1] for c in failed] == ["mid: sha256"]
    assert failed[0]["expected"] != failed[0]["actual"]
    assert "mid: sha256" in shown["reason"]
    junit = ET.parse(tmp_path / "q.xml").getroot()
    assert [s.get("failures") for s in junit] == ["1"]


def test_a_qualification_cut_short_by_a_restart_fails_and_drops_its_canaries(
    tmp_path: Path,
) -> None:
    """luod died during a step (before its kexec) and came back in the same boot: the
    qualification on file fails, saying why, and custody lets go of its canaries."""
    state = tmp_path / "luod"
    state.mkdir()
    kernel: dict[str, Any] = {
        "image": "/boot/x",
        "release": "7.2.13-luodsim",
        "version": "#1",
        "kho": "kho-v4",
    }
    kernel |= {"luo": "luo-v5", "handlers": {"memfd": "memfd-v2"}}
    record: dict[str, Any] = {  # the record on file, as JSON
        "kind": "qualification",
        "id": "0cut0",
        "outcome": "running",
        "reason": "",
        "request": {"chain": [], "options": {"large_mib": 1, "many_files": 1, "sessions": 0}},
        "chain": [kernel, kernel],
        "steps": [],
        "started": time.time(),
    }
    record["request"] |= {"with_vms": False, "uid": 0}
    left = {"record": record, "canaries": ["luodq.0cut0.mixed"]}
    (state / "qualification.json").write_text(json.dumps(left))  # as if it died before kexec
    daemon = api_daemon(state)
    try:
        code, listed = ctl(daemon, "qualify", "list")
    finally:
        daemon.stop()
    assert code == 0, listed
    [cut] = listed["qualifications"]
    assert cut["outcome"] == "failed" and "luod restarted" in cut["reason"]
    assert not (state / "qualification.json").exists()


def test_an_incompatible_kernel_b_fails_the_qualification_without_a_kexec(
    tmp_path: Path, images: tuple[Path, Path]
) -> None:
    """B = the abi-v6 kernel: the step's update is refused by the preflight, naming both LUO
    strings; nothing kexecs, the canaries are dropped, the report says why."""
    a, _ = images
    v6 = tmp_path / "bzImage-abi-v6"
    v6.write_bytes(bzimage(B_ABI_V6))
    daemon = api_daemon(tmp_path / "luod")
    try:
        code, started = ctl(daemon, "qualify", "start", "--chain", f"{a},{v6}", *SMALL)
        assert code == 0, started
        deadline = time.monotonic() + 60
        while (record := ctl(daemon, "qualify", "show")[1])["outcome"] == "running":
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
        assert daemon.alive()
        with Client(daemon.socket) as client:
            [update] = client.history()
        assert not list((tmp_path / "luod").glob("qualification.json"))
    finally:
        daemon.stop()
    assert record["outcome"] == "failed" and record["steps"][0]["checks"] == []
    assert record["reason"].startswith("preflight-failed: preflight refused: handover-abi")
    assert "luo-v6" in record["reason"]
    assert update["outcome"] == "refused"


def test_each_step_boots_its_kernel_with_its_initrd_and_command_line(
    tmp_path: Path, images: tuple[Path, Path]
) -> None:
    """A,B where B needs an initrd and a command line (a Debian host's kernel): the step's
    update loads B with both (its record says so), the report names them, and bad ones are
    refused before anything is preserved, with a code and a hint."""
    state = tmp_path / "luod"
    a, b = images
    initrd = tmp_path / "initrd.img-7.3.4"
    initrd.write_bytes(b"\x1f\x8b" + bytes(64))
    line = "root=/dev/vda ro console=ttyS0,115200 liveupdate=on kho=on"
    boot = ["--initrd", f"{b}={initrd}", "--cmdline", f"{b}={line}"]
    daemon = api_daemon(state)
    code, problem = ctl(
        daemon, "qualify", "start", "--chain", f"{a},{b}", "--initrd", f"{b}={tmp_path}/none"
    )
    assert code == 1 and problem["code"] == "bad-chain", problem
    assert "initrd" in problem["detail"] and "No such file" in problem["detail"] and problem["hint"]
    code, problem = ctl(daemon, "qualify", "start", "--chain", f"{a},{b}", "--cmdline", f"{b}=ro")
    assert code == 1 and problem["code"] == "bad-chain" and "liveupdate=on" in problem["detail"]
    assert "liveupdate=on" in problem["hint"]
    code, started = ctl(daemon, "qualify", "start", "--chain", f"{a},{b}", *boot, *SMALL)
    assert code == 0, started
    assert started["chain"][1]["initrd"] == str(initrd) and started["chain"][1]["cmdline"] == line
    assert started["chain"][0]["initrd"] is None and started["chain"][0]["cmdline"] is None
    assert started["request"]["chain"] == [str(a), str(b)]  # the images asked for
    kexeced(daemon)
    after = api_daemon(state)
    try:
        deadline = time.monotonic() + 60
        while (record := ctl(after, "qualify", "show")[1])["outcome"] == "running":
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
        with Client(after.socket) as client:
            [update] = [h for h in client.history() if h.get("kind") != "qualification"]
    finally:
        after.stop()
    assert record["outcome"] == "passed", record
    assert update["request"]["initrd"] == str(initrd) and update["request"]["cmdline"] == line
    assert record["steps"][0]["update"] == update["id"]
