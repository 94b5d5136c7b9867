"""The host's VMM start slots (luod.vmm.start_gate): one VMM per slot, a slot freed by release
or by its holder's death, and a gate that only ever delays a start, never blocks it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from luod.vmm import start_gate


def test_a_slot_is_held_until_released(tmp_path: Path) -> None:
    first = start_gate.take(str(tmp_path), 1)
    assert first.held and first.index == 0 and first.describe()["gated"] is True
    second = start_gate.take(str(tmp_path), 1, wait=0.2, poll=0.02)
    assert not second.held
    assert second.waited >= 0.2
    assert second.note.startswith("no slot free after 0.2 s: started anyway")
    assert second.describe() == {
        "gated": False, "note": second.note, "directory": str(tmp_path)
    }  # fmt: skip
    first.release()
    first.release()  # twice is harmless
    third = start_gate.take(str(tmp_path), 1, wait=0.2)
    assert third.held and third.waited < 0.2
    third.release()


def test_as_many_vmms_as_slots_start_at_once(tmp_path: Path) -> None:
    held = [start_gate.take(str(tmp_path), 3, wait=0) for _ in range(3)]
    assert all(slot.held for slot in held)
    assert sorted(slot.index for slot in held if slot.index is not None) == [0, 1, 2]
    assert not start_gate.take(str(tmp_path), 3, wait=0).held
    for slot in held:
        slot.release()


def test_a_waiting_vmm_starts_as_soon_as_a_slot_is_released(tmp_path: Path) -> None:
    holder = start_gate.take(str(tmp_path), 1)
    timer = threading.Timer(0.3, holder.release)
    timer.start()
    try:
        waiter = start_gate.take(str(tmp_path), 1, wait=10, poll=0.02)
    finally:
        timer.join()
    assert waiter.held and 0.25 <= waiter.waited < 5, waiter.waited
    waiter.release()


def test_a_vmm_that_dies_frees_its_slot(tmp_path: Path) -> None:
    code = (
        "import sys, time; from luod.vmm import start_gate; "
        f"slot = start_gate.take({str(tmp_path)!r}, 1); print(slot.held, flush=True); "
        "time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "True"
        assert not start_gate.take(str(tmp_path), 1, wait=0).held
    finally:
        child.kill()
        child.wait()
    after = start_gate.take(str(tmp_path), 1, wait=5, poll=0.02)
    assert after.held  # the kernel dropped the dead holder's lock
    after.release()


def test_no_gate_with_zero_slots_or_an_unusable_directory(tmp_path: Path) -> None:
    off = start_gate.take(str(tmp_path), 0)
    assert not off.held and off.note == "no gate (0 slots)"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    slot = start_gate.take(str(not_a_dir), 2)
    assert not slot.held and slot.waited == 0
    assert slot.note.startswith(f"no gate: {not_a_dir}: "), slot.note


def test_the_slot_files_are_not_followed_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "vmm-start-0.lock").symlink_to(target)
    slot = start_gate.take(str(gate), 1)
    assert not slot.held and "no gate" in slot.note
    assert target.read_text() == "keep"


@pytest.mark.parametrize(
    ("environ", "slots", "wait"),
    [
        ({}, start_gate.cpus(), start_gate.WAIT),
        ({"LUOD_VMM_START_SLOTS": "0"}, 0, start_gate.WAIT),
        ({"LUOD_VMM_START_SLOTS": "4", "LUOD_VMM_START_WAIT": "2.5"}, 4, 2.5),
        ({"LUOD_VMM_START_WAIT": "0"}, start_gate.cpus(), 0.0),
    ],
)
def test_settings_from_the_environment(environ: dict[str, str], slots: int, wait: float) -> None:
    assert start_gate.settings(environ) == (slots, wait, ())


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("LUOD_VMM_START_SLOTS", "many"),
        ("LUOD_VMM_START_SLOTS", "-1"),
        ("LUOD_VMM_START_SLOTS", "2.5"),
        ("LUOD_VMM_START_SLOTS", "1024"),  # a lock file each: at most 1023
        ("LUOD_VMM_START_WAIT", "soon"),
        ("LUOD_VMM_START_WAIT", "-3"),
        ("LUOD_VMM_START_WAIT", "nan"),  # would never end the wait
        ("LUOD_VMM_START_WAIT", "inf"),
    ],
)
def test_a_bad_setting_is_not_used_and_said(name: str, text: str) -> None:
    slots, wait, ignored = start_gate.settings({name: text})
    assert (slots, wait) == (start_gate.cpus(), start_gate.WAIT)
    assert len(ignored) == 1 and ignored[0].startswith(f"{name}={text!r} is not a "), ignored
    assert ignored[0].endswith(" used"), ignored
    bounds = "from 0 to 1023" if name == "LUOD_VMM_START_SLOTS" else "0 or more"
    assert bounds in ignored[0], ignored


def test_what_was_ignored_goes_with_the_slot(tmp_path: Path) -> None:
    slot = start_gate.take(str(tmp_path), 1, 1.0, ("LUOD_VMM_START_WAIT='soon' is not ...",))
    assert slot.describe() == {
        "gated": True, "slot": 0, "waited": slot.describe()["waited"],
        "directory": str(tmp_path), "ignored": ["LUOD_VMM_START_WAIT='soon' is not ..."],
    }  # fmt: skip
    slot.release()
    assert "ignored" not in start_gate.take(str(tmp_path), 1).describe()


def test_one_slot_per_cpu_this_process_may_use() -> None:
    assert start_gate.cpus() == len(os.sched_getaffinity(0))


def test_wait_is_bounded_even_when_polling_is_slow(tmp_path: Path) -> None:
    holder = start_gate.take(str(tmp_path), 1)
    began = time.monotonic()
    slot = start_gate.take(str(tmp_path), 1, wait=0.3, poll=5.0)
    assert not slot.held and time.monotonic() - began < 2.0
    holder.release()


def test_luod_qemus_slots_are_in_its_runtime_directory_unless_told() -> None:
    from luod.qemu import cli, start

    assert start.DEFAULT_DIRECTORY == cli.DEFAULT_RUNTIME
    assert start.gate_directory({}) == "/run/luod-qemu/start-slots"  # never a VM's <id>.lock
    assert start.gate_directory({"RUNTIME_DIRECTORY": "/run/a:/run/b"}) == "/run/a/start-slots"
    both = {"RUNTIME_DIRECTORY": "/run/a", "LUOD_VMM_START_DIR": "/srv/slots"}
    assert start.gate_directory(both) == "/srv/slots"
