"""/etc/luod/luod.toml: defaults, validation errors that name the key, `luod --check-config`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from luod.daemon import config
from luod.errors import LuodError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "luod.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    cfg = config.load(None)
    assert cfg.source == "defaults"
    assert cfg["paths.state_dir"] == "/var/lib/luod" and cfg["deadlines.freezing"] == 10.0


def test_values_from_the_file(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[deadlines]\nfreezing = 3\n[access]\nuids = [0, 1000]\n"))
    assert cfg["deadlines.freezing"] == 3 and cfg["access.uids"] == [0, 1000]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[deadlines]\nfreezing = -1\n", "deadlines.freezing"),
        ('[paths]\nstate_dir = "relative"\n', "paths.state_dir"),
        ('[kexec]\nmode = "sometimes"\n', "kexec.mode"),
        ('[access]\nuids = ["root"]\n', "access.uids"),
        ('[api]\ntcp = "nohostport"\ntoken_file = "/t"\n', "api.tcp"),
        ('[api]\ntcp = "127.0.0.1:8470"\n', "api.tcp"),
        ("[deadlines]\nfreezin = 3\n", "deadlines.freezin"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(LuodError) as info:
        config.load(write(tmp_path, text))
    assert info.value.code == "config" and key in info.value.message


def test_broken_toml_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LuodError) as info:
        config.load(write(tmp_path, "[deadlines\n"))
    assert "TOML" in info.value.hint


def test_check_config_prints_the_effective_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "[deadlines]\nfreezing = 4\n")
    done = subprocess.run(
        [sys.executable, "-m", "luod", "--config", str(path), "--check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deadlines.freezing"] == 4


def test_check_config_refuses_with_the_key_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, '[custody]\nmode = "tape"\n')
    done = subprocess.run(
        [sys.executable, "-m", "luod", "--config", str(path), "--check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "custody.mode" in done.stderr


def test_the_shipped_default_config_is_valid_and_is_the_defaults() -> None:
    shipped = Path(__file__).resolve().parents[2] / "packaging" / "luod.toml"
    cfg = config.load(shipped)
    assert cfg.values == {s.key: s.default for s in config.SETTINGS}
