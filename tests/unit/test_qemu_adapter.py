"""luod-qemu's pure parts: the QMP client against a scripted monitor on a socketpair, the
preserved file formats, QEMU's command line, and the rule that luod-qemu uses nothing of luod
but the public VMM client library."""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from luod.qemu.errors import QemuAdapterError
from luod.qemu.files import FreezeRecord, Memfd, VmSpec, parse_size
from luod.qemu.process import check_args, command, taps
from luod.qemu.qmp import Qmp

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 22}}}}
Monitor = Callable[[socket.socket], None]


def lines(sock: socket.socket) -> Iterator[dict[str, object]]:
    buffer = b""
    while True:
        while b"\n" not in buffer:
            chunk = sock.recv(4096)
            if not chunk:
                return
            buffer += chunk
        line, _, buffer = buffer.partition(b"\n")
        yield json.loads(line)


def send(sock: socket.socket, *messages: object) -> None:
    sock.sendall(b"".join(json.dumps(m).encode() + b"\r\n" for m in messages))


@pytest.fixture
def monitor() -> Iterator[Callable[[Monitor], Qmp]]:
    """A QMP connection to a scripted monitor (run in a thread on the other end)."""
    threads: list[threading.Thread] = []
    opened: list[Qmp] = []

    def connect(script: Monitor) -> Qmp:
        ours, theirs = socket.socketpair()

        def serve() -> None:
            with theirs:
                send(theirs, GREETING)
                request = next(lines(theirs))
                assert request["execute"] == "qmp_capabilities"
                send(theirs, {"return": {}, "id": request["id"]})
                script(theirs)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        qmp = Qmp.handshake(ours, timeout=2.0)
        opened.append(qmp)
        return qmp

    yield connect
    for qmp in opened:
        qmp.close()
    for thread in threads:
        thread.join(5)


def test_qmp_reads_the_version_and_matches_replies_by_id(
    monitor: Callable[[Monitor], Qmp],
) -> None:
    def script(sock: socket.socket) -> None:
        request = next(lines(sock))
        send(
            sock,
            {"return": "stale", "id": "luod-qemu-0"},  # a late reply to something else
            {"event": "STOP", "data": {}},
            {"return": {"status": "paused"}, "id": request["id"]},
        )

    qmp = monitor(script)
    assert qmp.version == (7, 2, 22)
    assert qmp.execute("query-status") == {"status": "paused"}
    assert qmp.wait_event("STOP", timeout=1)["event"] == "STOP"  # queued meanwhile


def test_qmp_error_carries_qemus_class_and_description(
    monitor: Callable[[Monitor], Qmp],
) -> None:
    def script(sock: socket.socket) -> None:
        request = next(lines(sock))
        error = {"class": "GenericError", "desc": "no such device"}
        send(sock, {"error": error, "id": request["id"]})

    with pytest.raises(QemuAdapterError) as caught:
        monitor(script).execute("device_del", {"id": "x"})
    assert caught.value.code == "qmp-error"
    assert "no such device" in caught.value.message and "GenericError" in caught.value.hint


def test_qmp_timeout_then_the_late_reply_is_dropped(monitor: Callable[[Monitor], Qmp]) -> None:
    answer = threading.Event()

    def script(sock: socket.socket) -> None:
        stop = next(lines(sock))
        answer.wait(5)
        cont = next(lines(sock))
        send(sock, {"return": {}, "id": stop["id"]}, {"return": "cont", "id": cont["id"]})

    qmp = monitor(script)
    with pytest.raises(QemuAdapterError) as caught:
        qmp.execute("stop", timeout=0.2)
    assert caught.value.code == "qmp-timeout"
    answer.set()
    assert qmp.execute("cont") == "cont"


def test_qmp_eof_is_qmp_closed(monitor: Callable[[Monitor], Qmp]) -> None:
    def script(sock: socket.socket) -> None:
        next(lines(sock))  # QEMU dies with the command unanswered

    with pytest.raises(QemuAdapterError) as caught:
        monitor(script).execute("stop")
    assert caught.value.code == "qmp-closed"


def test_qmp_passes_an_fd_with_its_command(
    monitor: Callable[[Monitor], Qmp], tmp_path: Path
) -> None:
    received: list[bytes] = []

    def script(sock: socket.socket) -> None:
        data, fds, _, _ = socket.recv_fds(sock, 4096, 1)
        with os.fdopen(fds[0], "rb") as passed:
            received.append(passed.read())
        request = json.loads(data.partition(b"\n")[0])
        send(sock, {"return": {}, "id": request["id"]})

    path = tmp_path / "state"
    path.write_bytes(b"device state")
    with path.open("rb") as file:
        monitor(script).execute("getfd", {"fdname": "luod-state"}, fd=file.fileno())
    assert received == [b"device state"]


def test_spec_round_trips_through_its_memfd() -> None:
    spec = VmSpec("vm1", 64 << 20, "qemu-system-x86_64", ("-machine", "pc", "-name", "é"))
    with spec.to_memfd() as memfd:
        assert VmSpec.from_bytes(memfd.read()) == spec


@pytest.mark.parametrize(
    "data", [b"", b"{}", b'{"format": "other"}', b'{"format": "luod-qemu-spec/1", "args": [1]}']
)
def test_unusable_spec_is_bad_spec(data: bytes) -> None:
    with pytest.raises(QemuAdapterError) as caught:
        VmSpec.from_bytes(data)
    assert caught.value.code == "bad-spec"


def test_freeze_record_fills_its_page_and_survives_garbage() -> None:
    record = FreezeRecord(2, 1700000000.5, {"stopped": 0.001}, 317997)
    assert len(record.to_bytes()) == 4096
    assert FreezeRecord.from_bytes(record.to_bytes()) == record
    assert FreezeRecord.from_bytes(b"\0" * 4096) is None


@pytest.mark.parametrize(("text", "size"), [("64M", 64 << 20), ("1G", 1 << 30), ("8192", 8192)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "12K3", "1000", "-1M"])
def test_bad_size_is_bad_argument(text: str) -> None:
    with pytest.raises(QemuAdapterError) as caught:
        parse_size(text)
    assert caught.value.code == "bad-argument"


def test_command_puts_the_ram_on_the_inherited_memfd() -> None:
    spec = VmSpec("vm1", 64 << 20, "qemu", ("-machine", "pc"))
    argv = command(spec, ram_fd=7, monitor_fd=9, incoming=True)
    assert argv[:3] == ["qemu", "-machine", "pc"]
    backend = argv[argv.index("-object") + 1]
    assert "mem-path=/proc/self/fd/7" in backend and "share=on" in backend
    assert f"size={64 << 20}" in backend
    assert argv[argv.index("-chardev") + 1] == "socket,id=luod-qmp,fd=9"
    assert argv[-2:] == ["-incoming", "defer"]
    assert "-incoming" not in command(spec, 7, 9, incoming=False)


@pytest.mark.parametrize("arg", ["-m", "-incoming", "-S"])
def test_options_luod_qemu_sets_are_refused(arg: str) -> None:
    with pytest.raises(QemuAdapterError) as caught:
        check_args(("-machine", "pc", arg, "x"))
    assert caught.value.code == "bad-argument"


def test_memfd_closes_once() -> None:
    memfd = Memfd.create("t", 4096)
    fd = memfd.fileno()
    memfd.close()
    memfd.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_luod_qemu_imports_only_the_public_client_library() -> None:
    package = Path(__file__).resolve().parents[2] / "luod" / "qemu"
    imported = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    luod = {name for name in imported if name == "luod" or name.startswith("luod.")}
    public = {"luod.vmm.client", "luod.vmm.start_gate"}  # the client, the host's start slots
    assert {name for name in luod if not name.startswith("luod.qemu")} == public


def test_the_vm_unit_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on an instance of luod-qemu@.service (this venv's binary)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze missing: apt-get install systemd (tests/vm/ensure-host-tools)")
    units = Path(__file__).resolve().parents[2] / "systemd"
    for unit in ("luod-qemu@.service", "luod-ready.target", "luod.service", "luod.socket",
                 "luod-api.socket"):  # fmt: skip
        text = (units / unit).read_text()
        text = text.replace("/usr/bin/luod", str(Path(sys.executable).parent / "luod"))
        (tmp_path / unit).write_text(text)
    instance = tmp_path / "luod-qemu@vm1.service"
    instance.symlink_to(tmp_path / "luod-qemu@.service")
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(instance)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and "FileDescriptorStorePreserve" not in line
    ]
    assert done.returncode == 0 and not complaints, "\n".join(complaints)
    text = (units / "luod-qemu@.service").read_text()
    assert "After=luod-ready.target" in text and "EnvironmentFile=/etc/luod/qemu/%i.conf" in text


def test_the_taps_of_the_qemu_command_line_are_declared_to_luod() -> None:
    args = (
        "-netdev", "tap,id=n0,ifname=vm1-net0,script=no,downscript=no,queues=2,vhost=off",
        "-device", "virtio-net-pci,netdev=n0,mq=on",
        "-nic", "tap,ifname=vm1-net1,script=no,model=virtio",
        "-netdev", "user,id=n2",
        "-nic", "tap,script=/etc/qemu-ifup",  # QEMU names this tap itself: nothing to declare
        "-name", "netdev",
    )  # fmt: skip
    assert taps(args) == ["vm1-net0", "vm1-net1"]
