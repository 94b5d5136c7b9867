"""tests/vm/log_port.py: the test guest's log port, split again into each luod's log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import blackout_budget
from tests.vm import log_port, qemu

KEXEC = {"event": "kexec", "timestamp": "2026-12-08T03:33:05.250000Z", "sync_ms": 0.2}


def _line(entry: dict[str, object]) -> str:
    return json.dumps(entry) + "\n"


def _port_text() -> str:
    return "".join(
        [
            "a line before any marker\n",
            _line({log_port.MARKER: "luod-1"}),
            _line({"event": "phase", "to": "frozen"}),
            _line(KEXEC),
            _line({log_port.MARKER: "luod-2"}),
            _line({"event": "recovered"}),
            '{"log_section": "not a marker", "event": "x"}\n',
            "a half line without its end",
        ]
    )


def test_sections_give_each_luod_its_own_lines() -> None:
    found = log_port.sections(_port_text())
    assert list(found) == ["luod-1", "luod-2"]
    assert found["luod-1"] == _line({"event": "phase", "to": "frozen"}) + _line(KEXEC)
    assert found["luod-2"].splitlines() == [
        json.dumps({"event": "recovered"}),
        '{"log_section": "not a marker", "event": "x"}',
        "a half line without its end",
    ]


def test_a_marker_names_no_path_outside_the_share(tmp_path: Path) -> None:
    (tmp_path / log_port.PORT_FILE).write_text(_line({log_port.MARKER: "../../x"}) + "line\n")
    assert [p.name for p in log_port.split(tmp_path)] == ["x.log"]
    assert (tmp_path / "x.log").read_text() == "line\n"


def test_read_finds_the_kexec_line_in_the_port_or_in_the_old_file(tmp_path: Path) -> None:
    (tmp_path / "luod-3.log").write_text(_line(KEXEC))
    at, sync = blackout_budget.kexec_stamp(log_port.read(tmp_path, "luod-3"), "luod-3")
    assert sync == pytest.approx(0.0002)
    (tmp_path / log_port.PORT_FILE).write_text(_port_text())
    assert blackout_budget.kexec_stamp(log_port.read(tmp_path, "luod-1"), "luod-1") == (at, sync)
    with pytest.raises(RuntimeError, match="no kexec in luod-2"):
        blackout_budget.kexec_stamp(log_port.read(tmp_path, "luod-2"), "luod-2")


def test_split_writes_the_files_the_benches_read(tmp_path: Path) -> None:
    assert log_port.split(tmp_path) == []
    (tmp_path / log_port.PORT_FILE).write_text(_port_text())
    written = log_port.split(tmp_path)
    assert sorted(p.name for p in written) == ["luod-1.log", "luod-2.log"]
    assert blackout_budget.reboot_called(tmp_path / "luod-1.log")[1] == pytest.approx(0.0002)


def test_device_is_the_port_named_for_luod(tmp_path: Path) -> None:
    assert log_port.device(tmp_path) is None
    for name, port in (("vport2p1", "org.qemu.guest_agent.0"), ("vport3p1", log_port.PORT_NAME)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "name").write_text(port + "\n")
    assert log_port.device(tmp_path) == Path("/dev/vport3p1")


def test_without_the_port_a_luod_logs_to_the_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_port, "device", lambda: None)
    with log_port.sink("luod-2-warm", tmp_path) as out:
        out.write(b"line\n")
    assert (tmp_path / "luod-2-warm.log").read_bytes() == b"line\n"


def test_with_the_port_each_luod_writes_under_its_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = tmp_path / "vport3p1"  # a file stands for the device node
    node.touch()
    monkeypatch.setattr(log_port, "device", lambda: node)
    monkeypatch.setattr(log_port, "_opened", {})
    first = log_port.sink("luod-1", tmp_path)
    first.write(b'{"event": "a"}\n')
    assert log_port.sink("luod-1-warm", tmp_path) is first  # the port takes one opener
    first.write(b'{"event": "b"}\n')
    first.close()
    found = log_port.sections(node.read_text())
    assert found == {"luod-1": '{"event": "a"}\n', "luod-1-warm": '{"event": "b"}\n'}


def test_the_guest_gets_the_port_only_when_asked(tmp_path: Path) -> None:
    args = log_port.qemu_args(tmp_path)
    assert f"virtserialport,chardev=luodlog,name={log_port.PORT_NAME}" in args
    assert f"file,id=luodlog,path={tmp_path / log_port.PORT_FILE}" in args
    assert "virtio-serial-pci" not in qemu.qemu_command(Path("bzImage"), tmp_path, "1G")
