"""/etc/luod/luod.toml: luod's configuration, as a declarative table of settings.

Every key has a type, a default and a check; an error names the key (``deadlines.freezing:
must be a number of seconds > 0``). Command-line options override the file.
"""

from __future__ import annotations

import grp
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from luod.core import kexec_mode
from luod.errors import LuodError
from luod.values import Value

DEFAULT_PATH: Final = Path("/etc/luod/luod.toml")
Check = Callable[[Any], str | None]  # None when fine, else what is wrong


def _path(value: Any) -> str | None:
    return None if isinstance(value, str) and value.startswith("/") else "must be an absolute path"


def _seconds(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 604800
    return None if ok else "must be a number of seconds > 0 (at most a week)"


def _choice(*options: str) -> Check:
    return lambda value: None if value in options else f"must be one of {', '.join(options)}"


def _ints(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, int) and v >= 0 for v in value)
    return None if ok else "must be a list of uids (integers >= 0)"


def _groups(value: Any) -> str | None:
    return (
        None
        if isinstance(value, list) and all(isinstance(v, str) for v in value)
        else ("must be a list of group names")
    )


def _host_port(value: Any) -> str | None:
    if value is None:
        return None
    host, sep, port = str(value).rpartition(":")
    return None if sep and host and port.isdigit() else 'must be "HOST:PORT"'


def _optional_path(value: Any) -> str | None:
    return None if value is None else _path(value)


def _count(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1_000_000
    return None if ok else "must be an integer from 1 to 1000000"


def _names(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) and 0 < len(v) < 16 for v in value)
    return None if ok else "must be a list of interface names"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


class _Setting(NamedTuple):
    key: str
    default: Any
    check: Check
    help: str


class Setting(Value, _Setting):
    __slots__ = ()


SETTINGS: Final = (
    Setting("paths.state_dir", "/var/lib/luod", _path, "manifest, journal, history"),
    Setting("paths.runtime_dir", "/run/luod", _path, "sockets, keeper"),
    Setting(
        "paths.socket", None, _optional_path, "VMM socket (default RUNTIME_DIR/liveupdate.sock)"
    ),
    Setting("access.uids", [0], _ints, "uids allowed on the sockets"),
    Setting("access.groups", ["luod"], _groups, "groups allowed on the sockets"),
    Setting("deadlines.preparing", 600.0, _seconds, "preserving every VM"),
    Setting("deadlines.freezing", 10.0, _seconds, "every VMM pauses and answers READY"),
    Setting("deadlines.frozen", 30.0, _seconds, "frozen until the kexec"),
    Setting("deadlines.reclaiming", 600.0, _seconds, "grace before unreclaimed VMs are reported"),
    Setting("deadlines.aborting", 30.0, _seconds, "resuming every VMM"),
    Setting("limits.connections_per_uid", 1100, _count, "VMM-socket connections of one uid"),
    Setting("limits.vms_per_uid", 1024, _count, "VMs one uid may register"),
    Setting("limits.sessions", 2000, _count, "VMs (LUO sessions) on the host"),
    Setting("limits.files_per_vm", 256, _count, "files preserved in one VM"),
    Setting("api.enabled", True, _bool, "serve the REST API"),
    Setting("api.socket", None, _optional_path, "REST unix socket (default RUNTIME_DIR/api.sock)"),
    Setting("api.tcp", None, _host_port, "also serve REST on TCP (needs api.token_file)"),
    Setting("api.token_file", None, _optional_path, "bearer token for TCP clients"),
    Setting("api.tls_cert", None, _optional_path, "TLS certificate for TCP"),
    Setting("api.tls_key", None, _optional_path, "TLS key for TCP"),
    Setting(
        "api.public_metrics",
        False,
        _bool,
        "on TCP, serve /metrics and /v1/health without the token (scrapers, load balancers)",
    ),
    Setting("api.max_body_bytes", 64 * 1024, _count, "larger REST request bodies get 413"),
    Setting("api.max_connections", 64, _count, "REST connections at once per listener (503)"),
    Setting(
        "custody.mode",
        "auto",
        _choice("auto", "systemd", "keeper", "memory"),
        "who else holds the session fds",
    ),
    Setting(
        "kexec.mode",
        "auto",
        _choice(*kexec_mode.MODES),
        "direct: luod calls reboot(KEXEC); systemd: systemctl kexec carries the fd store "
        "(systemd >= 261); auto: systemd when the host can, else direct",
    ),
    Setting(
        "kexec.systemd_timeout",
        120.0,
        _seconds,
        "after systemctl kexec, how long luod waits to be stopped before it gives up",
    ),
    Setting("kexec.unload_on_abort", True, _bool, "unload the image luod loaded on abort"),
    Setting(
        "kexec.running_image",
        None,
        _optional_path,
        "the running kernel's image, read for its file handlers' ABI strings by the "
        "handover-abi preflight (default /boot/vmlinuz-RELEASE)",
    ),
    Setting(
        "net.managed_bridges",
        [],
        _names,
        "bridges luod recreates with their recorded settings after a kexec, when missing "
        "(the VMs' taps join them)",
    ),
    Setting(
        "net.reclaim_wait",
        60.0,
        _seconds,
        "how long a RECLAIM waits for its VM's NICs to be rebuilt before it answers "
        "without them (memory is never held back longer)",
    ),
)


@dataclass(frozen=True)
class Config:
    values: dict[str, Any]
    source: str

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def allowed_gids(self) -> frozenset[int]:
        gids = set()
        for name in self.values["access.groups"]:
            try:
                gids.add(grp.getgrnam(name).gr_gid)
            except KeyError:
                continue  # a group that does not exist yet admits nobody
        return frozenset(gids)

    def to_json(self) -> str:
        return json.dumps({"source": self.source, **self.values}, indent=1, sort_keys=True)


def load(path: Path | None) -> Config:
    """Read ``path`` (default /etc/luod/luod.toml, which may be absent) and validate it."""
    chosen = path or DEFAULT_PATH
    try:
        data = tomllib.loads(chosen.read_text())
    except FileNotFoundError:
        if path is not None:
            raise LuodError(
                "config", f"{chosen}: no such file", "give an existing --config"
            ) from None
        data, source = {}, "defaults"
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LuodError("config", f"{chosen}: {exc}", "fix the TOML syntax") from exc
    else:
        source = str(chosen)
    return Config(_validate(data, chosen), source)


def _validate(data: dict[str, Any], path: Path) -> dict[str, Any]:
    known = {s.key: s for s in SETTINGS}
    flat = _flatten(data)
    for key in flat:
        if key not in known:
            raise LuodError(
                "config", f"{path}: unknown key {key!r}", "known keys: " + ", ".join(sorted(known))
            )
    values = {}
    for setting in SETTINGS:
        value = flat.get(setting.key, setting.default)
        if (problem := setting.check(value)) is not None:
            raise LuodError(
                "config",
                f"{path}: {setting.key} = {value!r}: {problem}",
                f"{setting.key}: {setting.help}",
            )
        values[setting.key] = value
    if values["api.tcp"] and not values["api.token_file"]:
        raise LuodError(
            "config", f"{path}: api.tcp needs api.token_file", "luod serves no unauthenticated TCP"
        )
    return values


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
