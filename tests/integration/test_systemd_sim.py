"""luod under a (fake) service manager: READY=1 once the VMM socket serves, STATUS=, watchdog
pings, STOPPING=1; the VMM socket from socket activation, checked by family."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from luod.vmm.client import Client

MAIN = [sys.executable, "-m", "luod"]


def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    return sock


def drain(sock: socket.socket, seconds: float) -> list[str]:
    messages, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def test_ready_status_watchdog_and_stopping(tmp_path: Path) -> None:
    notify = notify_socket(tmp_path / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"}
    state = tmp_path / "luod"
    process = subprocess.Popen(
        [*MAIN, "--simulate", str(state), "--no-api"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        messages = drain(notify, 1.5)
        ready = [m for m in messages if "READY=1" in m]
        assert ready and "STATUS=serving" in ready[0]
        assert (state / "run" / "liveupdate.sock").exists()  # it serves when READY=1 is sent
        assert sum("WATCHDOG=1" in m for m in messages) >= 3
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert any("STOPPING=1" in m for m in drain(notify, 0.3))
    finally:
        process.kill()
        process.wait()
        notify.close()


LAUNCH = """
import os, sys
os.dup2(int(sys.argv[1]), 3)  # as systemd does: the socket at fd 3, LISTEN_PID = luod's pid
os.close(int(sys.argv[1]))
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="liveupdate")
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def activated(
    tmp_path: Path, sock: socket.socket, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """luod started as systemd would start it from luod.socket."""
    number = sock.fileno()
    command = [
        sys.executable,
        "-c",
        LAUNCH,
        str(number),
        *MAIN[1:],
        "--simulate",
        str(tmp_path / "luod"),
        "--no-api",
    ]
    return subprocess.Popen(command, pass_fds=[number], stderr=subprocess.PIPE, env=env)


def test_the_vmm_socket_comes_from_socket_activation(tmp_path: Path) -> None:
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    process = activated(tmp_path, listener)
    listener.close()
    try:
        with Client(path, timeout=20) as client:
            assert client.hello()["protocol"] == "luod-vmm", process.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert path.exists()  # systemd's socket: luod does not remove it
        assert not (tmp_path / "luod" / "run" / "liveupdate.sock").exists()
    finally:
        process.kill()
        process.wait()


def test_an_activated_socket_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    notify = notify_socket(tmp_path / "notify")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    process = activated(tmp_path, udp, {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")})
    udp.close()
    _, err = process.communicate(timeout=20)
    assert process.returncode == 1
    assert b"bad-activated-socket" in err or b"from systemd is" in err
    assert not any("READY=1" in m for m in drain(notify, 0.3))  # no VMM was told to come
    notify.close()


def until_serving(notify: socket.socket, seconds: float = 30.0) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not any("STATUS=serving" in m for m in messages):
        messages += drain(notify, 0.2)
    return messages


def test_socket_activated_luod_says_ready_at_exec_and_again_once_serving(tmp_path: Path) -> None:
    """READY=1 before luod's imports (VMM units start beside luod's start: issue 17), with
    WatchdogSec= stretched over the start and given back once serving; a VMM that connects
    in between waits in the socket's backlog and is answered."""
    notify = notify_socket(tmp_path / "notify")
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "30000000"}
    process = activated(tmp_path, listener, env)
    listener.close()
    try:
        first = drain_one(notify, 20)
        assert first.startswith("READY=1\nSTATUS=starting"), first
        assert "WATCHDOG_USEC=90000000" in first.split("\n"), first
        with Client(path, timeout=20) as client:  # connected before luod serves
            assert client.hello()["protocol"] == "luod-vmm", process.stderr
        ready = [m for m in until_serving(notify) if "READY=1" in m]
        assert ready and "STATUS=serving" in ready[0], ready
        assert "WATCHDOG_USEC=30000000" in ready[0].split("\n"), ready
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait()
        notify.close()


def test_no_watchdog_is_turned_on_where_none_was_configured(tmp_path: Path) -> None:
    notify = notify_socket(tmp_path / "notify")
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}
    process = activated(tmp_path, listener, {**env, "NOTIFY_SOCKET": str(tmp_path / "notify")})
    listener.close()
    try:
        messages = [drain_one(notify, 20), *until_serving(notify)]
        assert [m.split("\n")[1] for m in messages if "READY=1" in m][:1] == [
            "STATUS=starting: VMMs wait in luod.socket until luod serves"
        ], messages
        assert sum("STATUS=serving" in m for m in messages) == 1, messages
        assert not any("WATCHDOG_USEC" in m for m in messages), messages
    finally:
        process.kill()
        process.wait()
        notify.close()


def drain_one(sock: socket.socket, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return sock.recv(4096).decode()
        except TimeoutError:
            continue
    raise AssertionError(f"no sd_notify message in {seconds} s")


API_LAUNCH = LAUNCH.replace('LISTEN_FDNAMES="liveupdate"', 'LISTEN_FDNAMES="api"')


def test_the_api_socket_comes_from_socket_activation(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    number = listener.fileno()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            API_LAUNCH,
            str(number),
            *MAIN[1:],
            "--simulate",
            str(tmp_path / "luod"),
        ],
        pass_fds=[number],
        stderr=subprocess.DEVNULL,
    )
    listener.close()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "luod.cli.main", "--socket", str(path), "--json", "status"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["phase"] == "idle"
        assert not (tmp_path / "luod" / "run" / "api.sock").exists()  # not bound by luod
    finally:
        process.terminate()
        process.wait(10)
    assert path.exists()


def test_ready_at_exec_can_be_turned_off_and_a_bad_value_is_named(tmp_path: Path) -> None:
    """LUOD_READY_AT_EXEC=no: READY=1 only once serving; a value neither yes nor no is taken as
    yes and named in luod's log."""
    for value, early in (("no", False), ("maybe", True)):
        notify = notify_socket(tmp_path / f"notify-{value}")
        path = tmp_path / f"activated-{value}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(8)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(tmp_path / f"notify-{value}"),
            "LUOD_READY_AT_EXEC": value,
        }
        process = activated(tmp_path / value, listener, env)
        listener.close()
        try:
            ready = [m for m in until_serving(notify) if "READY=1" in m]
            assert ready[-1].startswith("READY=1\nSTATUS=serving"), ready
            assert len(ready) == (2 if early else 1), (value, ready)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=10)
            assert (b'"bad-setting"' in err and b"LUOD_READY_AT_EXEC" in err) is early, err
        finally:
            process.kill()
            process.wait()
            notify.close()
