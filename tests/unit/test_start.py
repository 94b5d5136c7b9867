"""The ``luod`` command starts with the garbage collector off (luod.start) and the daemon turns
it on again once it serves, after freezing the start-up heap (issue 17: 8-10 ms of collections
before the first RECLAIM, on objects that live as long as luod)."""

from __future__ import annotations

import ast
import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import luod.main
from luod import start
from luod.core import manifest, statedir


def test_the_command_runs_luod_with_the_collector_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[bool, object, object]] = []

    def serve(resolved: object, keeper: object, helper: object) -> int:
        seen.append((gc.isenabled(), keeper, helper))
        return 3

    monkeypatch.setattr(sys, "argv", ["luod", "--simulate", str(tmp_path)])
    monkeypatch.setattr(luod.main, "serve", serve)
    try:
        with pytest.raises(SystemExit) as exited:
            start.entry()
    finally:
        gc.enable()
    # custody in memory (--simulate): no keeper to begin; the simulator retrieves in place
    assert seen == [(False, None, None)]
    assert exited.value.code == 3  # luod's exit status is the command's


ORDER = """
import sys
seen = []
def audit(event, args):
    if event == "subprocess.Popen" and "luod.custody.keeper" in args[1]:
        seen.append("keeper started")
    elif event == "subprocess.Popen" and "luod.kernel.retriever_helper" in args[1]:
        seen.append("helper spawned")
    elif event == "os.fork":
        seen.append("helper forked")
    elif event == "import" and args[0] in ("luod.daemon.daemon", "asyncio"):
        seen.append(args[0])
sys.addaudithook(audit)
sys.argv = ["luod", *sys.argv[1:]]
from luod import start
try:
    start.entry()
finally:
    print(seen)
"""


def test_the_keeper_starts_before_luods_imports_and_is_reaped_when_luod_stops_early(
    tmp_path: Path,
) -> None:
    """With the keeper as custodian, its start is begun before luod imports asyncio and its
    daemon (they take 0.1 s on a host, 2 s in the TCG guest, its start 0.03 s and
    0.7-0.9 s). Here luod then stops before it chooses its custody (another luod holds the
    state directory): the starter was reaped, and luod says why, as before."""
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    lock = statedir.StateLock(state)
    args = ["--simulate", str(state), "--custody", "keeper", "--no-api"]
    try:
        done = subprocess.run(
            [sys.executable, "-c", ORDER, *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        lock.close()
    order = ast.literal_eval(done.stdout.splitlines()[-1])
    assert order[0] == "keeper started", order
    assert {"asyncio", "luod.daemon.daemon"} <= set(order[1:]), order  # (import statements)
    assert done.returncode == 3 and "state-dir-locked" in done.stderr, done.stderr
    keeper = Path(f"{state}/run/keeper.sock.lock").read_text().strip()
    os.kill(int(keeper), signal.SIGKILL)  # it held nothing


IN_ITS_OWN_CGROUP = """
import luod.kernel.charged as charged  # no asyncio, no daemon: the kernel layer
charged.cgroup_of = lambda pid, proc=None: "/luod.service"
"""


def kexec_line(vms: int) -> bytes:
    """The handoff's last line, carrying an update record of ``vms`` VMs."""
    record = {"id": "u1", "vms": {f"vm{n}": {} for n in range(vms)}}
    return manifest.kexec_line({"update": record}, {})


@pytest.mark.parametrize("cgroup", ["own", "root"])
@pytest.mark.parametrize("journal", ["kexec of 3", "kexec of 0", "kexec of 3, env 4", "change"])
def test_after_a_live_update_the_retrieve_helper_starts_before_luods_imports(
    tmp_path: Path, cgroup: str, journal: str
) -> None:
    """After a live update of at least EARLY_RETRIEVER_VMS VMs, one (the journal ends with the
    handoff's kexec line) and in a cgroup of its own (a service's, whose VMMs are units apart),
    luod forks the kept retrieve helper before it imports asyncio and its daemon, so that no
    VMM's RECLAIM forks luod (luod.kernel.retriever.begin_early): a fork, not a second
    interpreter. Not after an update of no VMs, nor of fewer than $LUOD_EARLY_RETRIEVER_VMS,
    not in the root cgroup (VMMs most likely beside luod), and not on a boot without a kexec.
    Here luod then stops before it serves (another luod holds the state directory), and the
    helper with it."""
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    change = manifest.journal_line({"forget": "vm1"})
    line = kexec_line(0 if journal == "kexec of 0" else 3) if journal != "change" else b""
    (state / manifest.JOURNAL).write_bytes(change + line)
    env = {**os.environ, "LUOD_EARLY_RETRIEVER_VMS": "4"} if "env" in journal else None
    lock = statedir.StateLock(state)
    script = (IN_ITS_OWN_CGROUP if cgroup == "own" else "") + ORDER
    args = ["--state-dir", str(state), "--runtime-dir", str(tmp_path / "run"), "--no-api"]
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, *args, "--custody", "memory"],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
    finally:
        lock.close()
    order = ast.literal_eval(done.stdout.splitlines()[-1])
    assert done.returncode == 3 and "state-dir-locked" in done.stderr, done.stderr
    if cgroup == "own" and journal == "kexec of 3":
        assert order[0] == "helper forked", order  # luod has one thread then: no interpreter
        assert {"asyncio", "luod.daemon.daemon"} <= set(order[1:]), order
    else:
        assert "helper forked" not in order, order
    assert "helper spawned" not in order, order


def test_the_early_retriever_count_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert start.early_retriever_vms({}) == start.EARLY_RETRIEVER_VMS
    assert start.early_retriever_vms({"LUOD_EARLY_RETRIEVER_VMS": "0"}) == 0
    assert start.early_retriever_vms({"LUOD_EARLY_RETRIEVER_VMS": " 12 "}) == 12
    assert capsys.readouterr().err == ""
    for bad in ("-1", "many", "", "\u00b2"):
        assert start.early_retriever_vms({"LUOD_EARLY_RETRIEVER_VMS": bad}) == 1  # the default
        said = capsys.readouterr().err
        assert f"LUOD_EARLY_RETRIEVER_VMS={bad!r} is not a count" in said, said
        assert "hint:" in said


def test_the_daemon_turns_the_collector_on_once_it_serves(tmp_path: Path) -> None:
    script = f"""
import asyncio, gc
from pathlib import Path
from luod.core.access import AccessPolicy
from luod.daemon.daemon import Daemon
from luod.daemon.settings import Settings

async def main():
    gc.disable()
    daemon = Daemon(Settings.simulated(Path({str(tmp_path)!r}), access=AccessPolicy.default()))
    task = asyncio.create_task(daemon.run())
    while not daemon.settings.socket_path.exists():
        assert not task.done(), task
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    print(gc.isenabled(), gc.get_freeze_count() > 0, flush=True)
    daemon.stop()
    await task

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert "True True" in done.stdout.splitlines(), done.stdout + done.stderr
