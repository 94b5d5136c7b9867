"""``luod``: the daemon entry point. The only place that turns errors into exit codes.

Critical path after a reboot: backend → custody → recovery (sessions retrieved) → VMM socket
serving. Nothing here imports the REST stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import structlog

import luod
from luod.core import compat
from luod.core.access import AccessPolicy
from luod.core.clock import SystemClock
from luod.core.custody import choose_custody
from luod.core.recovery import recover
from luod.core.registry import Registry
from luod.daemon import config, logs, systemd, uplink_watch
from luod.daemon.handler import LuodHandler
from luod.daemon.update import KexecSettings, UpdateDriver
from luod.errors import LuodError
from luod.kernel import Backend, kernel_backend
from luod.kernel.sim import sim_backend
from luod.vmm.server import VmmServer

log = structlog.get_logger("luod")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
API_DELAY_AFTER_KEXEC = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="luod", description=__doc__.split("\n")[0])
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
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--sim-cmdline", help=argparse.SUPPRESS)  # tests: the simulated boot
    return parser.parse_args(argv)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_api_args(parser_args: argparse.Namespace) -> str | None:
    """What is wrong with the REST options, checked before anything starts (cheap, no imports
    of the REST stack): TCP only with a readable token file, TLS needs both halves."""
    if parser_args.api_tcp and not parser_args.api_token_file:
        return "--api-tcp needs --api-token-file: luod serves no unauthenticated TCP"
    if parser_args.api_token_file and not os.access(parser_args.api_token_file, os.R_OK):
        return f"--api-token-file {parser_args.api_token_file} is not readable"
    if bool(parser_args.api_tls_cert) != bool(parser_args.api_tls_key):
        return "--api-tls-cert and --api-tls-key go together"
    return None


def apply_config(args: argparse.Namespace, cfg: config.Config) -> None:
    """Fill what the command line left unset from the configuration file."""
    if args.simulate is None:
        args.state_dir = args.state_dir or Path(cfg["paths.state_dir"])
        args.runtime_dir = args.runtime_dir or Path(cfg["paths.runtime_dir"])
        args.socket = args.socket or (Path(cfg["paths.socket"]) if cfg["paths.socket"] else None)
        args.custody = args.custody or cfg["custody.mode"]
    args.no_api = args.no_api or not cfg["api.enabled"]
    args.api_socket = args.api_socket or (Path(cfg["api.socket"]) if cfg["api.socket"] else None)
    args.api_tcp = args.api_tcp or (_host_port(cfg["api.tcp"]) if cfg["api.tcp"] else None)
    for key in ("token_file", "tls_cert", "tls_key"):
        if getattr(args, f"api_{key}") is None and cfg[f"api.{key}"]:
            setattr(args, f"api_{key}", Path(cfg[f"api.{key}"]))
    args.api_public_metrics = cfg["api.public_metrics"]
    args.config_values = cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config.load(args.config)
    except LuodError as exc:
        print(f"luod: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config:
        print(cfg.to_json())
        return EXIT_OK
    apply_config(args, cfg)
    if problem := check_api_args(args):
        print(f"luod: {problem}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(args.log_level)
    try:
        return asyncio.run(run(args))
    except LuodError as exc:
        log.error("fatal", code=exc.code, message=exc.message, hint=exc.hint)
        print(f"luod: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


def paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    if args.simulate is not None:
        state = args.state_dir or args.simulate
        runtime = args.runtime_dir or args.simulate / "run"
    else:
        state = args.state_dir or Path("/var/lib/luod")
        runtime = args.runtime_dir or Path("/run/luod")
    socket_path = args.socket or runtime / "liveupdate.sock"
    return state, runtime, socket_path


def backend_for(args: argparse.Namespace) -> Backend:
    if args.simulate is not None:
        return sim_backend(
            args.simulate / "kernel",
            cmdline=args.sim_cmdline,
            eager_release=True,
            read_abi=compat.CACHE.declared,  # a kexec'd simulator is the image's kernel
        )
    return kernel_backend()


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


async def run(args: argparse.Namespace) -> int:
    clock = SystemClock()
    started = clock.now()
    state_dir, runtime_dir, socket_path = paths(args)
    for directory in (state_dir, runtime_dir):
        directory.mkdir(parents=True, exist_ok=True)
    backend = backend_for(args)
    prefer = args.custody or ("memory" if args.simulate is not None else "auto")
    custody = choose_custody(runtime_dir, prefer)
    cfg: config.Config = args.config_values
    policy = AccessPolicy(frozenset(cfg["access.uids"]), cfg.allowed_gids())
    registry = Registry(backend, custody, state_dir, policy)
    report = recover(registry)
    activated = systemd.activated_socket("liveupdate")
    listener = activated or bind(socket_path)
    stop = asyncio.Event()
    handler = LuodHandler(registry)
    server = VmmServer(listener, handler)
    log.info(
        "serving",
        socket=str(socket_path),
        backend=backend.name,
        custody=custody.kind,
        recovery=report.mode,
        vms=len(registry.vms),
        version=luod.__version__,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            driver = UpdateDriver(
                registry,
                handler.clients,
                clock,
                handler.notify,
                stop.set,
                tasks.create_task,
                kexec=KexecSettings(
                    cfg["kexec.mode"],
                    lambda: systemd.kexec_facts(custody.kind),
                    systemd.start_kexec,
                    cfg["kexec.systemd_timeout"],
                ),
            )
            handler.driver = driver
            driver.configure(
                {
                    k.split(".", 1)[1]: v
                    for k, v in cfg.values.items()
                    if k.startswith("deadlines.")
                },
                unload_on_abort=cfg["kexec.unload_on_abort"],
                running_image=_optional_path(cfg["kexec.running_image"]),
            )
            _handle_signals(driver, stop)
            background = [tasks.create_task(server.serve())]
            handler.listeners.append(systemd.on_event)
            systemd.ready(f"serving {len(registry.vms)} VMs ({report.mode})")
            if (interval := systemd.watchdog_interval()) is not None:
                background.append(tasks.create_task(systemd.watchdog(interval)))
            if not args.no_api:
                api_socket = args.api_socket or runtime_dir / "api.sock"
                delay = API_DELAY_AFTER_KEXEC if report.mode == "after-kexec" else 0.0
                api = _serve_api(handler, args, api_socket, delay)
                background.append(tasks.create_task(api))
            if report.mode == "after-kexec":
                driver.resume_after_kexec(started)
                background.append(tasks.create_task(_reclaim_grace(driver)))
                background.append(tasks.create_task(uplink_watch.watch(driver)))
            await stop.wait()
            systemd.stopping()
            driver.shutdown()  # an update before the freeze is aborted: VMMs resume
            for task in background:
                task.cancel()
    finally:
        custody.close()
        listener.close()
        if activated is None:  # an activated socket's path belongs to systemd
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
    log.info("stopped")
    return EXIT_OK


def _handle_signals(driver: UpdateDriver, stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT stop luod, except while freezing/frozen/rebooting: then the stop waits
    until the update has left those phases (never a half-done update). After systemctl kexec
    the stop is systemd's shutdown and goes ahead (UpdateDriver.defers_signals)."""
    loop = asyncio.get_running_loop()

    def requested(signum: int) -> None:
        if driver.defers_signals:
            log.warning(
                "signal-deferred",
                signal=signal.Signals(signum).name,
                phase=str(driver.machine.phase),
            )
            loop.call_later(0.1, requested, signum)
            return
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, requested, signum)


async def _serve_api(
    handler: LuodHandler, args: argparse.Namespace, api_socket: Path, delay: float
) -> None:
    """The REST API, started once the VMM socket serves. FastAPI and uvicorn are imported in a
    worker thread so that the event loop keeps serving VMMs meanwhile; right after a kexec the
    import also waits ``delay`` seconds, which belong to the VMMs reclaiming their memory.
    uvicorn then serves from a thread and event loop of its own (luod.rest.thread), reading
    snapshots of luod's state and marshalling mutations to this loop (luod.rest.bridge): API
    traffic never queues in front of a VMM. Cancelling this stops that thread and waits for it."""
    activated = systemd.activated_socket("api")
    await asyncio.sleep(delay)
    try:
        adapter, app, serve, bridge, thread = await asyncio.to_thread(_import_rest)
    except ImportError as exc:  # a broken install costs the API, never the VMMs' sessions
        log.error(
            "rest-disabled",
            code="rest-import",
            message=f"the REST stack does not import: {exc}",
            hint="install luod's dependencies (fastapi, uvicorn, httptools, uvloop); "
            "the VMM socket is unaffected",
        )
        return
    facade = adapter.DaemonFacade(handler)
    over = bridge.LoopBridge(facade, asyncio.get_running_loop())
    handler.listeners += [over.changed, facade.publish]  # stale snapshots, then SSE

    async def serving() -> None:  # in the REST thread, building the app too
        await serve.serve_rest(
            app.create_app(over),
            unix_path=api_socket,
            tcp=args.api_tcp,
            token_file=args.api_token_file,
            tls_cert=args.api_tls_cert,
            tls_key=args.api_tls_key,
            unix_sock=activated,
            public_metrics=args.api_public_metrics,
        )

    try:
        await thread.serve_in_thread(serving)
    except LuodError as exc:  # luod keeps serving VMMs; the operator sees why REST is off
        log.error("rest-disabled", code=exc.code, message=exc.message, hint=exc.hint)
    except Exception as exc:  # a REST bug must not take the TaskGroup (and luod) down
        log.exception("rest-disabled", code="rest-failed", message=str(exc))


def _import_rest() -> tuple[Any, ...]:
    names = ("adapter", "app", "serve", "bridge", "thread")
    return tuple(importlib.import_module(f"luod.rest.{name}") for name in names)


async def _reclaim_grace(driver: UpdateDriver) -> None:
    grace = driver.machine.remaining()
    if grace is not None:
        await asyncio.sleep(grace)
        driver.reclaim_deadline_passed()


def bind(path: Path) -> socket.socket:
    """Listen on ``path``; it appears only once it accepts (bound aside, then renamed)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(staging))
    os.chmod(staging, 0o660)
    listener.listen(128)
    os.replace(staging, path)
    return listener


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
