"""The ``luod`` command line and /etc/luod/luod.toml, resolved into ``Settings``: everything
luod decides before it imports its daemon.

Light on purpose (no asyncio, no structlog, no argparse for an empty command line, which is how
luod.service runs it): luod.start resolves the settings first, begins the fd keeper's start
when the keeper will be luod's custodian (luod.custody.choose.begin_keeper), and only then
imports luod.main, so that the keeper's start runs beside luod's imports after a kexec.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import luod
from luod.core.access import AccessPolicy
from luod.core.limits import Limits
from luod.daemon import config
from luod.daemon.settings import ApiSettings, Settings
from luod.errors import LuodError

if TYPE_CHECKING:
    import argparse

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3
"""EXIT_LOCKED: another luod runs on the same state directory (this one touched nothing)."""
DESCRIPTION = """\
luod keeps VMs' memory across a live kernel update (kexec with Linux's Live Update
Orchestrator, /dev/liveupdate). VMMs hand their guest RAM over on its VMM socket; operators
drive updates with luoctl(1) over its REST API. It runs as root, normally as the systemd unit
luod.service; after a live update it takes the VMs' sessions back and hands them to their
VMMs."""
EPILOG = """\
examples:
  luod                          serve with /etc/luod/luod.toml (as luod.service does)
  luod --check-config           print the effective settings and exit
  luod --simulate /tmp/luo      try it without a LUO kernel (an in-process simulator)

files:
  /etc/luod/luod.toml           configuration (--config); options here override it
  /var/lib/luod                 state: the manifest and the update history (--state-dir)
  /run/luod/liveupdate.sock     the VMM socket (--socket)
  /run/luod/api.sock            the REST API (--api-socket); luoctl talks to it

signals:
  SIGTERM, SIGINT               stop; an update before the freeze is aborted (VMs resume);
                                while VMs are frozen the stop waits for the update

exit status:
  0  stopped cleanly (or --check-config found the configuration valid)
  1  failed: luod could not start or run (the log says why, with a hint)
  2  usage: a bad option or configuration
  3  another luod runs on the same state directory (this one touched nothing)"""


DEFAULTS: Final[dict[str, Any]] = {
    "simulate": None,
    "socket": None,
    "state_dir": None,
    "runtime_dir": None,
    "custody": None,
    "no_api": False,
    "api_socket": None,
    "api_tcp": None,
    "api_token_file": None,
    "api_tls_cert": None,
    "api_tls_key": None,
    "config": None,
    "check_config": False,
    "log_level": "info",
    "sim_cmdline": None,
}
"""What an empty command line means (tests/unit/test_luod_help.py checks it against the
parser's): luod.service runs ``luod`` without arguments."""


def parse_args(argv: list[str] | None) -> SimpleNamespace:
    """The command line. Without arguments, as luod.service runs it, the defaults: argparse is
    not imported then (8.5 ms on a host, 0.13-0.18 s in the TCG test guest by -X importtime,
    before the first RECLAIM)."""
    given = sys.argv[1:] if argv is None else argv
    if not given:
        return SimpleNamespace(**DEFAULTS)
    return SimpleNamespace(**vars(parser().parse_args(given)))


def parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="luod",
        usage="%(prog)s [--simulate STATE_DIR] [--config FILE] [options]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"luod {luod.__version__}")
    parser.add_argument(
        "--simulate",
        metavar="STATE_DIR",
        type=Path,
        help="run against the in-process LUO simulator kept in STATE_DIR",
    )
    parser.add_argument(
        "--socket", type=Path, help="VMM socket (default: RUNTIME_DIR/liveupdate.sock)"
    )
    parser.add_argument("--state-dir", type=Path, help="default /var/lib/luod (or STATE_DIR)")
    parser.add_argument("--runtime-dir", type=Path, help="default /run/luod (or STATE_DIR/run)")
    parser.add_argument(
        "--custody",
        choices=("auto", "systemd", "keeper", "memory"),
        default=None,
        help="who else holds the session fds (default auto)",
    )
    parser.add_argument("--no-api", action="store_true", help="do not serve the REST API")
    parser.add_argument("--api-socket", type=Path, help="REST unix socket (RUNTIME_DIR/api.sock)")
    parser.add_argument(
        "--api-tcp",
        metavar="HOST:PORT",
        type=_host_port,
        help="also serve REST on TCP (needs --api-token-file)",
    )
    parser.add_argument("--api-token-file", type=Path, help="bearer token for TCP clients")
    parser.add_argument("--api-tls-cert", type=Path, help="TLS certificate for TCP")
    parser.add_argument("--api-tls-key", type=Path, help="TLS key for TCP")
    parser.add_argument(
        "--config",
        type=Path,
        help=f"configuration file (default {config.DEFAULT_PATH}, if present)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print the effective settings, exit",
    )
    parser.add_argument(
        "--log-level",
        default=DEFAULTS["log_level"],
        choices=("debug", "info", "warning", "error", "critical"),
        help="the least severe log events written (default %(default)s)",
    )
    parser.add_argument("--sim-cmdline", help=argparse.SUPPRESS)  # tests: the simulated boot
    return parser


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def settings_from(args: SimpleNamespace, cfg: config.Config) -> Settings:
    """The command line wins over the configuration file, which wins over the defaults. Under
    ``--simulate`` the file's paths and custody do not apply: everything is under STATE_DIR."""
    if args.simulate is not None:
        given = {
            "state_dir": args.state_dir,
            "runtime_dir": args.runtime_dir,
            "socket": args.socket,
            "custody": args.custody,
        }
        where = Settings.simulated(
            args.simulate, **{key: value for key, value in given.items() if value is not None}
        )
    else:
        where = Settings(
            state_dir=args.state_dir or Path(cfg["paths.state_dir"]),
            runtime_dir=args.runtime_dir or Path(cfg["paths.runtime_dir"]),
            socket=args.socket or _path(cfg["paths.socket"]),
            custody=args.custody or cfg["custody.mode"],
        )
    enabled = not args.no_api and cfg["api.enabled"]
    return where._replace(
        sim_cmdline=args.sim_cmdline,
        access=AccessPolicy(frozenset(cfg["access.uids"]), cfg.allowed_gids()),
        api=_api(args, cfg, where.runtime_dir) if enabled else None,
        kexec_mode=cfg["kexec.mode"],
        systemd_timeout=cfg["kexec.systemd_timeout"],
        unload_on_abort=cfg["kexec.unload_on_abort"],
        running_image=_path(cfg["kexec.running_image"]),
        managed_bridges=frozenset(cfg["net.managed_bridges"]),
        nic_wait=cfg["net.reclaim_wait"],
        deadlines={
            key.split(".", 1)[1]: value
            for key, value in cfg.values.items()
            if key.startswith("deadlines.")
        },
        limits=Limits(
            **{
                key.split(".", 1)[1]: value
                for key, value in cfg.values.items()
                if key.startswith("limits.")
            }
        ),
    )


def _api(args: SimpleNamespace, cfg: config.Config, runtime: Path) -> ApiSettings:
    return ApiSettings(
        socket=args.api_socket or _path(cfg["api.socket"]) or runtime / "api.sock",
        tcp=args.api_tcp or (_host_port(cfg["api.tcp"]) if cfg["api.tcp"] else None),
        token_file=args.api_token_file or _path(cfg["api.token_file"]),
        tls_cert=args.api_tls_cert or _path(cfg["api.tls_cert"]),
        tls_key=args.api_tls_key or _path(cfg["api.tls_key"]),
        public_metrics=cfg["api.public_metrics"],
        max_body_bytes=cfg["api.max_body_bytes"],
        max_connections=cfg["api.max_connections"],
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def check_api(api: ApiSettings) -> str | None:
    """What is wrong with the REST settings, checked before anything starts (cheap, no imports
    of the REST stack), even with the API off: TCP only with a readable token file, TLS needs
    both halves."""
    if api.tcp and not api.token_file:
        return "--api-tcp needs --api-token-file: luod serves no unauthenticated TCP"
    if api.token_file and not os.access(api.token_file, os.R_OK):
        return f"--api-token-file {api.token_file} is not readable"
    if bool(api.tls_cert) != bool(api.tls_key):
        return "--api-tls-cert and --api-tls-key go together"
    return None


class Resolved(NamedTuple):
    """What luod runs with: its settings and the least severe log events it writes."""

    settings: Settings
    log_level: str


def resolve(argv: list[str] | None) -> Resolved | int:
    """The command line (``sys.argv[1:]`` when None) and the configuration file, resolved; or
    the exit status of a command that ends here (--check-config, a bad configuration, bad REST
    settings), its words already printed. argparse exits by itself on --help, --version and a
    bad option."""
    args = parse_args(argv)
    try:
        cfg = config.load(args.config)
    except LuodError as exc:
        print(f"luod: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config:
        print(cfg.to_json())
        return EXIT_OK
    settings = settings_from(args, cfg)
    if problem := check_api(_api(args, cfg, settings.runtime_dir)):
        print(f"luod: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return Resolved(settings, args.log_level)
