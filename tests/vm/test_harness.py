"""Tests of the VM harness itself; each boots QEMU/TCG (about 3 s a boot, 3 s more a kexec)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.vm.qemu import run_guest

REPO = Path(__file__).resolve().parents[2]


def test_single_stage_runs_and_sees_liveupdate(luo_kernel: Path, tmp_path: Path) -> None:
    stage = 'echo "stage $LUOD_VM_STAGE of $LUOD_VM_SHARE: $GREETING"\ntest -c /dev/liveupdate'
    env = {"GREETING": "it's me"}
    result = run_guest([stage], kernel=luo_kernel, env=env, workdir=tmp_path, timeout=120)
    result.check()
    assert result.boots == 1
    assert result.stage(1).rc == 0
    assert "stage 1 of /run/luod-vm-share: it's me" in result.stage(1).log
    assert "Linux version" in result.stage(1).dmesg
    assert "liveupdate number" not in result.stage(1).dmesg  # a cold boot
    assert result.run_dir.parent == tmp_path


def test_host_tmp_stays_visible_and_tmp_is_writable(luo_kernel: Path, tmp_path: Path) -> None:
    """CI clones the project wherever it likes, /tmp included: the guest must see it."""
    marker = tmp_path / "visible-from-the-guest"
    marker.write_text("hello guest")
    stage = f"cat {marker} && echo written >/tmp/guest-file && cat /tmp/guest-file"
    result = run_guest([stage], kernel=luo_kernel, workdir=tmp_path, timeout=120).check()
    assert "hello guest" in result.stage(1).log and "written" in result.stage(1).log
    assert not (Path("/tmp") / "guest-file").exists()  # the guest's writes stay in the guest


def test_stage_kexecs_into_the_next_stage(luo_kernel: Path, tmp_path: Path) -> None:
    stages = [
        f"kexec -s -l --reuse-cmdline {luo_kernel} && kexec -e\necho kexec failed; exit 1",
        "dmesg | grep 'liveupdate number: 1'",
    ]
    result = run_guest(stages, kernel=luo_kernel, workdir=tmp_path, timeout=120).check()
    assert result.boots == 2
    assert result.stage(1).kexeced
    assert result.stage(2).rc == 0
    assert "Retrieved live update data, liveupdate number: 1" in result.stage(2).dmesg


def test_failing_stage_is_reported(luo_kernel: Path, tmp_path: Path) -> None:
    stage = "echo about to fail >&2\nexit 3"
    result = run_guest([stage], kernel=luo_kernel, workdir=tmp_path, timeout=120)
    assert result.stage(1).rc == 3
    with pytest.raises(AssertionError) as raised:
        result.check()
    report = str(raised.value)
    assert "stage 1: exit code 3" in report
    assert "about to fail" in report


def test_hanging_guest_is_killed_on_timeout(luo_kernel: Path, tmp_path: Path) -> None:
    result = run_guest(["sleep 1000"], kernel=luo_kernel, workdir=tmp_path, timeout=15)
    assert result.timed_out
    assert result.qemu_returncode is None
    assert result.stage(1).started and result.stage(1).rc is None
    with pytest.raises(ProcessLookupError):
        os.kill(result.qemu_pid, 0)
    with pytest.raises(AssertionError, match="TIMED OUT"):
        result.check()


def test_a_line_on_the_log_port_survives_a_kexec_right_after_it(
    luo_kernel: Path, tmp_path: Path
) -> None:
    """tests/vm/log_port.py: what a process wrote to the port is on the host when write(2)
    returns, so luod's ``kexec`` line, written just before its reboot(), reaches the bench; each
    log is read back by its marker, in the guest and once split on the host."""
    python = f"cd {REPO} && exec {sys.executable} -c "
    kexec_line = '{"event": "kexec", "timestamp": "2026-12-08T03:33:05.250000+00:00"}'
    first = (
        "import os\nfrom pathlib import Path\nfrom tests.vm import log_port\n"
        "out = log_port.sink('luod-1', Path(os.environ['LUOD_VM_SHARE']))\n"
        f"out.write({kexec_line!r}.encode() + b'\\n')\n"
        "os.execvp('kexec', ['kexec', '-e'])\n"
    )
    second = (
        "import os\nfrom pathlib import Path\nfrom tests.vm import log_port\n"
        "share = Path(os.environ['LUOD_VM_SHARE'])\n"
        "print('port', log_port.device())\n"
        "print('read', log_port.read(share, 'luod-1'), end='')\n"
        "log_port.sink('luod-2', share).write(b'after the kexec\\n')\n"
    )
    stages = [
        f"kexec -s -l --reuse-cmdline {luo_kernel} || exit 1\n{python}{shlex.quote(first)}",
        f"{python}{shlex.quote(second)}",
    ]
    result = run_guest(stages, kernel=luo_kernel, workdir=tmp_path, timeout=180, log_port=True)
    result.check()
    assert result.stage(1).kexeced
    assert re.search(r"^port /dev/vport\d+p\d+$", result.stage(2).log, re.MULTILINE)
    assert f"read {kexec_line}\n" in result.stage(2).log
    assert (result.share / "luod-1.log").read_text() == kexec_line + "\n"
    assert (result.share / "luod-2.log").read_text() == "after the kexec\n"
