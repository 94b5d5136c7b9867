"""The effective settings of one luod: what the command line and /etc/luod/luod.toml resolve to
(luod.main), and all that ``Daemon`` needs to build the process."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from luod.core.access import AccessPolicy
from luod.core.limits import Limits
from luod.values import Value


class _ApiSettings(NamedTuple):
    socket: Path
    tcp: tuple[str, int] | None = None
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_metrics: bool = False  # on TCP, /metrics and /v1/health without the token
    max_body_bytes: int = 64 * 1024  # larger request bodies get 413, unread
    max_connections: int = 64  # per listener; more get 503


class ApiSettings(Value, _ApiSettings):
    """Where the REST API listens: a unix socket, and TCP only with a bearer token (and TLS
    when both halves are given)."""

    __slots__ = ()


class _Settings(NamedTuple):
    state_dir: Path = Path("/var/lib/luod")  # manifest, journal, history
    runtime_dir: Path = Path("/run/luod")  # sockets, keeper
    socket: Path | None = None  # the VMM socket; None: RUNTIME_DIR/liveupdate.sock
    simulate: Path | None = None  # the simulator's kernel state; None: the running kernel
    sim_cmdline: str | None = None  # the simulated boot's command line (tests)
    custody: str = "auto"  # auto | systemd | keeper | memory (luod.custody.choose)
    access: AccessPolicy = AccessPolicy()
    api: ApiSettings | None = None  # None: no REST API
    kexec_mode: str = "auto"  # auto | direct | systemd (luod.core.kexec_mode)
    systemd_timeout: float = 120.0  # after systemctl kexec, how long until luod gives up
    unload_on_abort: bool = True
    running_image: Path | None = None  # the running kernel's image (the handover-abi preflight)
    deadlines: Mapping[str, float] = MappingProxyType({})  # per phase, seconds
    limits: Limits = Limits()  # docs/limits.md
    managed_bridges: frozenset[str] = frozenset()  # rebuilt with their settings after a kexec
    nic_wait: float = 60.0  # how long a RECLAIM waits for its VM's NICs to be rebuilt


class Settings(Value, _Settings):
    __slots__ = ()

    @property
    def socket_path(self) -> Path:
        return self.socket or self.runtime_dir / "liveupdate.sock"

    @classmethod
    def simulated(cls, state: Path, **changes: Any) -> Settings:
        """``luod --simulate STATE``: all state under STATE, the simulated kernel's in
        STATE/kernel, in-process custody (it dies with luod, as the simulated kernel does)."""
        defaults: dict[str, Any] = {
            "state_dir": state,
            "runtime_dir": state / "run",
            "simulate": state / "kernel",
            "custody": "memory",
        }
        return cls(**{**defaults, **changes})
