"""luoctl qualify's output: the report, the JUnit XML for CI systems, the chain argument; and
the history's kinds over REST (records: updates and qualifications, filtered by kind)."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from luod.cli import qualify
from luod.cli.parser import build_parser
from luod.core import timeline
from luod.rest import history_reads, records

pytestmark = pytest.mark.unit
KERNEL = {"image": "/boot/a", "version": "#1", "kho": "kho-v4", "luo": "luo-v5"}


def record(outcome: str = "failed") -> dict[str, Any]:
    checks = [
        {"name": "kernel: release", "result": "pass", "expected": "7.3.4", "actual": "7.3.4"},
        {"name": "luodq.x.mixed/large: sha256", "result": "fail", "expected": "ab", "actual": "cd"},
    ]
    return {
        "kind": "qualification",
        "id": "0123abcd",
        "outcome": outcome,
        "reason": "1 checks failed: luodq.x.mixed/large: sha256" if outcome == "failed" else "",
        "request": {
            "chain": ["/boot/a", "/boot/b"],
            "options": {"large_mib": 256, "many_files": 130, "sessions": 16},
            "with_vms": False,
            "uid": 0,
        },
        "chain": [
            {**KERNEL, "release": "7.2.13", "handlers": {"memfd": "memfd-v2"}},
            {**KERNEL, "release": "7.3.4", "handlers": {"memfd": "memfd-v2"}},
        ],
        "steps": [
            {
                "index": 0,
                "from_release": "7.2.13",
                "to_release": "7.3.4",
                "update": "u1",
                "liveupdate_number": 1,
                "timings": {"canaries_seconds": 1.5, "kexec_seconds": 9.0, "verify_seconds": 2.0},
                "checks": checks,
            }
        ],
        "started": 1_800_000_000.0,
        "finished": 1_800_000_030.0,
    }


def test_the_report_names_both_kernels_their_abi_and_every_failed_check() -> None:
    lines = qualify.report(record())
    text = "\n".join(lines)
    assert lines[0] == "qualification 0123abcd: failed"
    assert "kernel 7.2.13 #1: kho-v4, luo-v5, memfd memfd-v2 (/boot/a)" in text
    assert "step 0: 7.2.13 → 7.3.4 (liveupdate number 1; canaries 1.5s, kexec 9.0s" in text
    assert "1/2 checks passed" in text
    assert "FAIL luodq.x.mixed/large: sha256: expected ab, got cd" in text


def test_junit_has_a_suite_per_step_and_a_failure_per_failed_check() -> None:
    root = ET.fromstring(qualify.junit(record()))
    [suite] = list(root)
    assert suite.get("name") == "7.2.13 -> 7.3.4"
    assert (suite.get("tests"), suite.get("failures"), suite.get("time")) == ("2", "1", "2.0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["kernel: release", "luodq.x.mixed/large: sha256"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "expected ab, got cd"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["liveupdate_number"] == "1" and props["kexec_seconds"] == "9.0"


def test_junit_of_a_qualification_that_never_kexeced_is_one_failure() -> None:
    refused = {**record(), "steps": [], "reason": "preflight-failed: handover-abi"}
    root = ET.fromstring(qualify.junit(refused))
    [case] = root.iter("testcase")
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == "preflight-failed: handover-abi"


def test_the_chain_needs_two_kernels_and_becomes_absolute_paths() -> None:
    args = build_parser().parse_args(["qualify", "start", "--chain", "a,/boot/b,a"])
    assert args.chain[1] == "/boot/b" and all(k.startswith("/") for k in args.chain)
    with pytest.raises(argparse.ArgumentTypeError):
        qualify._chain("only-one")


def test_the_history_models_and_filters_both_kinds(tmp_path: Path) -> None:
    update = {"id": "u1", "request": {"kernel": "/boot/b", "uid": 0}, "outcome": "completed"}
    entries = [{**update, "finished": 1_800_000_000.0}, record("passed")]
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)  # as luod writes
    (tmp_path / timeline.HISTORY).write_text(lines)
    everything = history_reads.page(tmp_path, "all", None, 50)
    assert [r.kind for r in everything.history] == ["qualification", "update"]
    assert [r.id for r in history_reads.page(tmp_path, "update", None, 50).history] == ["u1"]
    only = history_reads.page(tmp_path, "qualification", None, 50).history
    assert [r.id for r in only] == ["0123abcd"]
    assert records.history_entry(entries[0]).kind == "update"  # no kind: an update


def start_args(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(["qualify", "start", *argv])
    args.check(args)
    return args


def test_each_kernel_of_the_chain_carries_its_initrd_and_command_line() -> None:
    args = start_args(
        "--chain", "/boot/a,b,/boot/a",
        "--initrd", "b=initrd.img-b",
        "--cmdline", "b=root=/dev/vda ro liveupdate=on kho=on console=ttyS0,115200",
        "--cmdline", "/boot/a=liveupdate=on",
    )  # fmt: skip
    b = args.chain[1]
    assert b.startswith("/") and b.endswith("/b")
    assert qualify.chain_body(args) == [
        {"image": "/boot/a", "cmdline": "liveupdate=on"},
        {
            "image": b,
            "initrd": f"{b.removesuffix('/b')}/initrd.img-b",  # made absolute here
            "cmdline": "root=/dev/vda ro liveupdate=on kho=on console=ttyS0,115200",
        },
        {"image": "/boot/a", "cmdline": "liveupdate=on"},
    ]
    plain = start_args("--chain", "/boot/a,/boot/b")
    assert qualify.chain_body(plain) == ["/boot/a", "/boot/b"]  # as before: image paths


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--initrd", "/boot/c=/boot/initrd-c"], "/boot/c is not in --chain"),
        (["--cmdline", "/boot/b=x", "--cmdline", "/boot/b=y"], "--cmdline names a kernel twice"),
        (["--initrd", "/boot/b"], "is not IMAGE=VALUE"),
        (["--initrd", "=/boot/initrd"], "is not IMAGE=VALUE"),
    ],
)
def test_boot_options_that_name_no_kernel_of_the_chain_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        start_args("--chain", "/boot/a,/boot/b", *argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_timings_a_step_did_not_take_are_left_out() -> None:
    shown = record()
    shown["steps"][0]["timings"] |= {"qemu_canary_seconds": None, "qemu_restore_seconds": 4.5}
    text = "\n".join(qualify.report(shown))
    assert "verify 2.0s, qemu_restore 4.5s)" in text and "None" not in text
    assert b'name="qemu_restore_seconds" value="4.5"' in qualify.junit(shown)
    assert b"qemu_canary_seconds" not in qualify.junit(shown)


def test_the_report_shows_how_each_kernel_boots() -> None:
    shown = record()
    shown["chain"][1] |= {"initrd": "/boot/initrd.img-7.3.4", "cmdline": "liveupdate=on"}
    text = "\n".join(qualify.report(shown))
    assert "    initrd /boot/initrd.img-7.3.4\n    cmdline liveupdate=on" in text
    assert text.count("\n    initrd ") == 1  # a kernel without one says nothing
