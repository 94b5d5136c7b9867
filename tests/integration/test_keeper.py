"""The fd keeper as a real process: survival of kill -9, 2000 entries, hostile input, its exit.

Every test cleans up: the keeper of each test is killed and reaped in the fixture's finalizer
(this module makes pytest a child subreaper, so orphaned keepers come back to it), and the fd
guard compares /proc/self/fd before and after.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from luod.core.custodian import Custody
from luod.custody.choose import begin_keeper, choose_custody
from luod.custody.keeper import EXIT_BUSY
from luod.custody.keeper_client import KeeperCustody
from luod.custody.keeper_start import KeeperStart
from luod.errors import LuodError
from luod.fdpass import pack_rights
from tests.unit.test_custody import (
    CustodyContract,
    Settle,
    close_all,
    fd_guard,
    identity,
    memfd,
    pipe,
    writers_gone,
)

__all__ = ["fd_guard"]
pytestmark = pytest.mark.integration

PR_SET_CHILD_SUBREAPER = 36
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def subreaper() -> Iterator[None]:
    """Orphaned keepers are reparented to pytest, so that we can reap what we kill."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    assert prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not alive(pid):
            return True
        time.sleep(0.01)
    return False


def keeper_pid(path: Path) -> int | None:
    """The keeper that holds ``path``'s lock (its pid is in the lock file), if still running."""
    try:
        pid = int(Path(f"{path}.lock").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) and b"luod.custody.keeper" in cmdline else None


@pytest.fixture
def keeper_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="luodk-", dir="/tmp"))  # short: AF_UNIX paths
    yield directory
    pid = keeper_pid(directory / "keeper.sock")
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid), f"keeper {pid} survived SIGKILL"
    shutil.rmtree(directory)


@pytest.fixture
def path(keeper_dir: Path) -> Path:
    return keeper_dir / "keeper.sock"


@pytest.fixture
def custody(path: Path) -> Iterator[KeeperCustody]:
    custody = KeeperCustody(path)
    yield custody
    custody.close()


class TestKeeperContract(CustodyContract):
    @pytest.fixture
    def custody(self, path: Path) -> Iterator[Custody]:
        custody = KeeperCustody(path)
        yield custody
        custody.close()

    @pytest.fixture
    def settle(self) -> Settle:
        return lambda: None  # the keeper replies after it acted


CLIENT = """
import os, sys, time
from pathlib import Path
from luod.custody.keeper_client import KeeperCustody
from luod.custody.keeper_start import KeeperStart
from luod.kernel.fd import OwnedFd
custody = KeeperCustody(Path(sys.argv[1]))
fd = OwnedFd(os.memfd_create("guest-ram"))
os.write(fd.fileno(), b"guest ram of vm1")
custody.deposit("luod.vm1", fd)
info = os.fstat(fd.fileno())
print(custody.keeper_pid, info.st_dev, info.st_ino, flush=True)
time.sleep(600)
"""


def test_a_deposit_survives_kill_9_of_the_clients_process_group(path: Path) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(path)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    try:
        line = client.stdout.readline() if client.stdout else ""
        assert line, client.stderr.read() if client.stderr else "no output"
        pid, dev, ino = map(int, line.split())
    finally:
        os.killpg(client.pid, signal.SIGKILL)  # luod and everything in its group, kill -9
        client.communicate()
    assert client.returncode == -signal.SIGKILL
    assert alive(pid)
    restarted = KeeperCustody(path)
    recovered = restarted.recover()
    try:
        assert restarted.keeper_pid == pid
        assert identity(recovered["luod.vm1"]) == (dev, ino)
        assert os.pread(recovered["luod.vm1"].fileno(), 64, 0) == b"guest ram of vm1"
    finally:
        close_all(recovered)
        restarted.close()


def test_close_leaves_every_fd_with_the_keeper(path: Path) -> None:
    first = KeeperCustody(path)
    with memfd(b"ram") as fd:
        first.deposit("luod.vm1", fd)
        want = identity(fd)
    first.close()
    second = KeeperCustody(path)
    recovered = second.recover()
    assert {name: identity(fd) for name, fd in recovered.items()} == {"luod.vm1": want}
    close_all(recovered)
    assert second.keeper_pid == first.keeper_pid
    second.close()


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_2000_deposits_recover_all(
    many_fds: None, custody: KeeperCustody, record_property: Callable[[str, object], None]
) -> None:
    names = [f"luod.vm-{i:04d}" for i in range(2000)]
    started = time.perf_counter()
    for name in names:
        with memfd(name.encode()) as fd:
            custody.deposit(name, fd)
    deposited = time.perf_counter()
    recovered = custody.recover()
    done = time.perf_counter()
    try:
        assert sorted(recovered) == names
        assert all(os.pread(fd.fileno(), 16, 0) == n.encode() for n, fd in recovered.items())
    finally:
        close_all(recovered)
    record_property("deposit_2000_s", round(deposited - started, 3))
    record_property("recover_2000_s", round(done - deposited, 3))
    print(f"2000 deposits {deposited - started:.3f}s, recover {done - deposited:.3f}s")
    assert done - deposited < 10


def raw_connection(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize(
    ("payload", "copies", "reason"),
    [
        (b"\xff\xfe\x00garbage", 0, "not ASCII"),
        (b"HELLO", 1, "unknown command"),
        (b"PUT luod.vm1", 0, "PUT came with 0 fds"),
        (b"PUT luod.vm1", 2, "PUT came with 2 fds"),
        (b"PUT luod.vm1", 60, "MSG_CTRUNC"),
        (b"PUT luod:vm1", 1, "contains ':'"),
        (b"LIST", 1, "LIST came with 1 fds"),
        (b"PUT " + b"x" * 4000, 1, "MSG_TRUNC"),
    ],
)
def test_a_malformed_message_is_refused_its_fds_closed_and_service_goes_on(
    custody: KeeperCustody, path: Path, payload: bytes, copies: int, reason: str
) -> None:
    before = open_fds(custody.keeper_pid)
    reader, writer = pipe()
    with reader, raw_connection(path) as raw:
        with writer:
            raw.sendmsg([payload], pack_rights([writer.fileno()] * copies))
        reply = raw.recv(4096).decode()
        assert reply.startswith("ERR ") and reason in reply
        assert writers_gone(reader)  # the keeper kept no copy
        raw.send(b"PING")
        assert raw.recv(4096) == f"OK {custody.keeper_pid}".encode()
    with memfd(b"ok") as fd:
        custody.deposit("luod.vm1", fd)
    close_all(custody.recover())
    assert open_fds(custody.keeper_pid) == before + 1  # just the deposit


def test_an_empty_message_ends_only_that_connection(custody: KeeperCustody, path: Path) -> None:
    with raw_connection(path) as raw:
        raw.send(b"")
        assert raw.recv(4096) == b""
    assert custody.recover() == {}


def test_another_uid_is_refused(custody: KeeperCustody, path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another uid")
    python = shutil.which("python3", path="/usr/bin:/bin")  # luod's venv may be root-only
    if python is None:
        pytest.skip("no system python3 that uid 65534 may run")
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o666)  # let uid 65534 reach SO_PEERCRED, the check under test
    probe = "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); "
    probe += "s.connect(sys.argv[1]); print(s.recv(4096).decode()); print(s.recv(4096) == b'')"
    done = subprocess.run(
        [python, "-I", "-c", probe, str(path)], user=65534, capture_output=True,
        text=True, timeout=30, cwd="/", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["ERR uid 65534 may not use the keeper of uid 0", "True"]
    assert custody.recover() == {}


def test_the_keeper_exits_when_emptied_and_disconnected(path: Path) -> None:
    custody = KeeperCustody(path)
    for name in ("luod.vm1", "luod"):
        with memfd(b"") as fd:
            custody.deposit(name, fd)
    custody.withdraw("luod.vm1")
    custody.withdraw("luod")
    pid = custody.keeper_pid
    assert alive(pid)
    custody.close()
    assert wait_gone(pid)
    assert not path.exists()


def test_an_unused_keeper_leaves_after_its_idle_time(path: Path) -> None:
    command = [sys.executable, "-m", "luod.custody.keeper", "--socket", str(path)]
    done = subprocess.run([*command, "--idle-exit", "0.2"], cwd=REPO, timeout=30, check=False)
    assert done.returncode == 0
    pid = int(Path(f"{path}.lock").read_text())
    assert wait_gone(pid)
    assert not path.exists()


def test_a_second_keeper_for_the_same_socket_steps_aside(
    custody: KeeperCustody, path: Path
) -> None:
    command = [sys.executable, "-m", "luod.custody.keeper", "--socket", str(path)]
    done = subprocess.run(command, cwd=REPO, timeout=30, check=False)
    assert done.returncode == EXIT_BUSY
    assert KeeperCustody(path).keeper_pid == custody.keeper_pid


def test_the_keeper_is_a_daemon_outside_our_session(custody: KeeperCustody) -> None:
    pid = custody.keeper_pid
    assert os.getsid(pid) == pid != os.getsid(0)
    assert os.getpgid(pid) != os.getpgid(0)
    assert {os.readlink(f"/proc/{pid}/fd/{n}") for n in (0, 1, 2)} == {os.devnull}
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:"))[7:], 16)
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        assert ignored & (1 << (signum - 1)), signum.name


def test_a_stale_socket_is_replaced(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as dead:
        dead.bind(str(path))  # what a kill -9 of a keeper leaves behind
    custody = KeeperCustody(path)
    assert alive(custody.keeper_pid)
    custody.close()


def test_a_killed_keeper_makes_custody_unavailable(custody: KeeperCustody) -> None:
    os.kill(custody.keeper_pid, signal.SIGKILL)
    assert wait_gone(custody.keeper_pid)
    with memfd(b"") as fd, pytest.raises(LuodError) as caught:
        custody.deposit("luod.vm1", fd)
    assert caught.value.code == "custody-unavailable"
    assert "do not stop luod" in caught.value.hint
    with pytest.raises(LuodError, match="closed"):
        custody.recover()


def test_no_keeper_and_no_start_is_unavailable(path: Path) -> None:
    with pytest.raises(LuodError) as caught:
        KeeperCustody(path, start=False)
    assert caught.value.code == "custody-unavailable"
    assert "--foreground" in caught.value.hint


def test_a_keeper_that_cannot_start_says_why(keeper_dir: Path) -> None:
    with pytest.raises(LuodError, match=r"did not start.*cannot lock") as caught:
        KeeperCustody(keeper_dir / "missing" / "keeper.sock")
    assert caught.value.code == "custody-unavailable"


def test_a_socket_path_too_long_for_af_unix_is_refused() -> None:
    with pytest.raises(LuodError, match="longer than 107 bytes"):
        KeeperCustody(Path("/tmp") / ("x" * 120))


def test_choose_custody_falls_back_to_a_keeper(
    keeper_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    custody = choose_custody(keeper_dir)
    assert isinstance(custody, KeeperCustody)
    assert (custody.kind, custody.socket_path) == ("keeper", keeper_dir / "keeper.sock")
    custody.close()
    assert wait_gone(custody.keeper_pid)  # it held nothing


def test_a_keeper_begun_early_is_the_one_luod_connects_to(keeper_dir: Path, path: Path) -> None:
    """luod.start begins the keeper's start before luod's imports (choose.begin_keeper); the
    custody made later awaits that start and uses its keeper: no second one is started."""
    starting = begin_keeper(keeper_dir, "keeper")
    assert starting is not None and starting.path == path
    custody = choose_custody(keeper_dir, "keeper", starting)
    try:
        assert isinstance(custody, KeeperCustody)
        assert custody.keeper_pid == keeper_pid(path)
        assert len(list(keeper_dir.glob("keeper.sock*"))) == 2  # its socket and its lock
        starting.close()  # a no-op once awaited
    finally:
        custody.close()
    assert begin_keeper(keeper_dir, "memory") is None
    assert begin_keeper(keeper_dir, "systemd") is None


def test_an_early_start_that_failed_is_started_again(path: Path) -> None:
    """A start begun early that did not bring a keeper up costs nothing but itself: connecting
    starts the keeper as it would have without it."""

    def failing() -> KeeperStart:
        command = [sys.executable, "-c", "import sys; sys.exit('no room')"]
        return KeeperStart(path, subprocess.Popen(command, stderr=subprocess.PIPE))

    with pytest.raises(LuodError, match=r"did not start \(exit 1\): no room"):
        failing().finish(10)  # what the custody swallows
    custody = KeeperCustody(path, starting=failing())
    try:
        custody.check()
        assert custody.keeper_pid == keeper_pid(path)
    finally:
        custody.close()


def test_a_start_luod_never_asked_for_is_reaped_and_its_keeper_ends(path: Path) -> None:
    """luod stopped before it chose its custody (e.g. another luod holds the state directory):
    the starter is reaped (not killed: its keeper reports on a pipe to it), and the keeper it
    started holds nothing (it exits when idle, IDLE_EXIT; the fixture kills it sooner)."""
    starting = KeeperStart.begin(path)
    starter = starting._process
    assert starter is not None
    starting.close()
    assert starter.returncode == 0 and starting._process is None  # EXIT_READY, reaped
    assert keeper_pid(path) is not None
    look = KeeperCustody(path, start=False)
    try:
        assert look.recover() == {}
    finally:
        look.close()


def test_the_keeper_runs_without_site(custody: KeeperCustody, path: Path) -> None:
    """Its start after each kexec is on the VMs' path: ``site`` (site-packages' .pth files)
    was a fifth of it in the TCG guest, and the keeper needs only the standard library and
    luod, which it finds on the PYTHONPATH luod gives it."""
    pid = keeper_pid(path)
    assert pid is not None and pid == custody.keeper_pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[1:4] == [b"-S", b"-m", b"luod.custody.keeper"], argv
    custody.check()
