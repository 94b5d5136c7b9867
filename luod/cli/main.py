"""``luoctl``: drive luod's live updates from a shell. The one place that turns luoctl's
errors into messages and exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TextIO

import httpx
import shtab

import luod
from luod.cli import qualify, render
from luod.cli.client import DEFAULT_SOCKET, Api, ApiError, LocalError, Target, Unreachable

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED, EXIT_ABORTED, EXIT_UNREACHABLE = range(6)
HISTORY_PAGE: Final = 500
EXIT_OF_OUTCOME: Final = {
    "completed": EXIT_OK,
    "completed-with-unreclaimed": EXIT_ERROR,
    "aborted": EXIT_ABORTED,
    "failed": EXIT_ABORTED,
    "refused": EXIT_REFUSED,
}
EPILOG: Final = """\
exit status:
  0  success (for 'update watch': the update completed, or the host is rebooting into it)
  1  other error (luod refused the request; see the message and its hint)
  2  usage error
  3  refused by the preflight checks (preflight, update start, update start --dry-run)
  4  the update was aborted, or its reboot failed and it rolled back ('update watch')
  5  luod is unreachable (not running, wrong --socket/--url, or no permission)

luoctl talks to luod's REST API on its unix socket (default /run/luod/api.sock, root or
group luod), or with --url and --token-file over TCP."""


class Output:
    """Prints documents as JSON (``--json``) or as the lines ``render`` makes of them."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json, self.out, self.err = as_json, out, err

    def show(self, doc: Any, lines: Callable[[Any], list[str]]) -> None:
        text = json.dumps(doc, sort_keys=True) if self.as_json else "\n".join(lines(doc))
        print(text, file=self.out, flush=True)

    def event(self, name: str, data: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps({"event": name, **data}, sort_keys=True), file=self.out, flush=True)
        else:
            print("\n".join(render.event(name, data)), file=self.out, flush=True)

    def note(self, text: str) -> None:
        if not self.as_json:
            print(text, file=self.out, flush=True)

    def problem(self, doc: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(doc, sort_keys=True), file=self.out, flush=True)
        else:
            print("\n".join(render.problem(doc)), file=self.err, flush=True)


# --- commands ---------------------------------------------------------------------------------
def status(api: Api, args: argparse.Namespace, out: Output) -> int:
    out.show(api.get("/v1/status"), render.status)
    return EXIT_OK


def preflight(api: Api, args: argparse.Namespace, out: Output) -> int:
    result = api.post("/v1/preflight", next_kernel(args))
    out.show(result, render.checks)
    return EXIT_OK if result["ok"] else EXIT_REFUSED


def vms(api: Api, args: argparse.Namespace, out: Output) -> int:
    out.show(api.get("/v1/vms"), render.vms)
    return EXIT_OK


def vm(api: Api, args: argparse.Namespace, out: Output) -> int:
    out.show(api.get(f"/v1/vms/{args.id}"), render.vm)
    return EXIT_OK


def history(api: Api, args: argparse.Namespace, out: Output) -> int:
    """The last N updates (all without --last), oldest first: luod pages them newest first,
    ``next_cursor`` leads to older ones."""
    wanted = args.last if args.last is not None else None
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while wanted is None or len(found) < wanted:
        limit = HISTORY_PAGE if wanted is None else min(HISTORY_PAGE, wanted - len(found))
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(f"/v1/history?{query}")
        found += page["history"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    out.show({"history": found[::-1]}, render.history)
    return EXIT_OK


def update_start(api: Api, args: argparse.Namespace, out: Output) -> int:
    body = {**next_kernel(args), "deadline_seconds": dict(args.deadline), "dry_run": args.dry_run}
    result = api.post("/v1/update", body)
    if args.dry_run:
        out.show(result, render.checks)
        return EXIT_OK if result["ok"] else EXIT_REFUSED
    out.show(result, render.started)
    return EXIT_OK


def update_show(api: Api, args: argparse.Namespace, out: Output) -> int:
    doc = api.get("/v1/update")
    out.show(doc, lambda d: [f"phase {d['phase']}", *render.ended(d["update"])])
    return EXIT_OK


def update_abort(api: Api, args: argparse.Namespace, out: Output) -> int:
    body = {"reason": args.reason} if args.reason else None
    out.show(api.post("/v1/update/abort", body)["update"], render.ended)
    return EXIT_OK


def update_watch(api: Api, args: argparse.Namespace, out: Output) -> int:
    """Follow the events until an update ends; then its blackout per VM."""
    phase, outcome = "", None
    try:
        for name, data in api.events():
            out.event(name, data)
            phase = data.get("phase", phase) if name == "STATE" else phase
            phase = data.get("to", phase) if name == "PHASE" else phase
            if name == "UPDATE_END":
                outcome = data.get("outcome")
                break
    except Unreachable:
        if phase != "rebooting":
            raise
    if outcome is None:
        if phase != "rebooting":
            raise Unreachable(api.where, ConnectionError("luod ended the event stream"))
        out.note("luod is rebooting into the new kernel: watch again once it is back")
        return EXIT_OK
    record = api.get("/v1/update")["update"]
    if record is not None and not out.as_json:
        out.note("\n".join(render.blackout(record)) or "no blackout measured")
    return EXIT_OF_OUTCOME.get(str(outcome), EXIT_ERROR)


def completion(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Output) -> int:
    print(shtab.complete(parser, shell=args.shell), file=out.out)
    return EXIT_OK


def next_kernel(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"kernel": args.kernel}
    if args.initrd:
        body["initrd"] = args.initrd
    if args.reuse_cmdline:
        body["reuse_cmdline"] = True
    else:
        body["cmdline"] = args.cmdline
    if args.allow_unknown_abi:
        body["allow_unknown_abi"] = True
    return body


# --- the command line -------------------------------------------------------------------------
def deadline(text: str) -> tuple[str, float]:
    phase, sep, seconds = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return phase, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PHASE=SECONDS") from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON documents"
    )
    parser = argparse.ArgumentParser(
        prog="luoctl",
        description="Live updates of this host's kernel, with the VMs' memory kept (luod).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"luoctl {luod.__version__}")
    _connection_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _simple_commands(commands, common)
    _update_commands(commands, common)
    qualify.register(commands, common)
    shells = commands.add_parser("completion", help="print a shell completion script")
    shells.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    shells.set_defaults(run=None)
    return parser


def _connection_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--socket",
        type=Path,
        default=Path(env("LUOCTL_SOCKET", str(DEFAULT_SOCKET))),
        help="luod's API socket (default %(default)s, or $LUOCTL_SOCKET)",
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    parser.add_argument("--url", default=env("LUOCTL_URL"), help="luod over TCP ($LUOCTL_URL)")
    parser.add_argument(
        "--token-file",
        type=Path,
        default=env("LUOCTL_TOKEN_FILE"),
        help="bearer token for --url ($LUOCTL_TOKEN_FILE)",
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    parser.add_argument("--timeout", type=float, default=30.0, help=argparse.SUPPRESS)


def _simple_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    commands.add_parser("status", parents=[common], help="luod, the kernel, the VMs").set_defaults(
        run=status
    )
    checks = commands.add_parser("preflight", parents=[common], help="check a next kernel")
    _kernel_options(checks)
    checks.set_defaults(run=preflight)
    commands.add_parser("vms", parents=[common], help="the VMs luod holds").set_defaults(run=vms)
    one = commands.add_parser("vm", parents=[common], help="one VM and its files")
    one.add_argument("id")
    one.set_defaults(run=vm)
    past = commands.add_parser("history", parents=[common], help="past updates")
    past.add_argument("--last", type=int, metavar="N", help="only the last N")
    past.set_defaults(run=history)


def _update_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    update = commands.add_parser("update", help="start, follow or abort an update")
    verbs = update.add_subparsers(dest="verb", required=True, metavar="VERB")
    start = verbs.add_parser("start", parents=[common], help="start an update (root)")
    _kernel_options(start)
    start.add_argument(
        "--deadline",
        type=deadline,
        action="append",
        default=[],
        metavar="PHASE=SECONDS",
        help="deadline of a phase (preparing, freezing, frozen, reclaiming, aborting)",
    )
    start.add_argument("--dry-run", action="store_true", help="only run the preflight checks")
    start.set_defaults(run=update_start)
    abort = verbs.add_parser("abort", parents=[common], help="abort the running update (root)")
    abort.add_argument("--reason", help="recorded, and sent to the VMMs with RESUME")
    abort.set_defaults(run=update_abort)
    verbs.add_parser("watch", parents=[common], help="follow the update live").set_defaults(
        run=update_watch
    )
    verbs.add_parser("show", parents=[common], help="the running or last update").set_defaults(
        run=update_show
    )


def _kernel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", required=True, help="the next kernel image (bzImage)")
    parser.add_argument("--initrd", help="its initrd")
    cmdline = parser.add_mutually_exclusive_group(required=True)
    cmdline.add_argument("--cmdline", help="its command line (keep liveupdate=on)")
    cmdline.add_argument(
        "--reuse-cmdline", action="store_true", help="boot it with the running command line"
    )
    parser.add_argument(
        "--allow-unknown-abi",
        action="store_true",
        help="go ahead when luod cannot read a kernel's handover ABI (recorded in the update)",
    )
    for action in parser._actions:
        if action.dest in ("kernel", "initrd"):
            action.complete = shtab.FILE  # type: ignore[attr-defined]


# --- the one exit point -----------------------------------------------------------------------
def main(
    argv: list[str] | None = None,
    *,
    http: httpx.Client | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``http``: a client to use instead of connecting (tests inject one over the ASGI app)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (2)
        return int(exc.code or 0)
    output = Output(getattr(args, "json", False), out or sys.stdout, err or sys.stderr)
    if args.run is None:
        return completion(parser, args, output)
    return _run(args, output, http)


def _run(args: argparse.Namespace, output: Output, http: httpx.Client | None) -> int:
    target = Target(args.socket, args.url, args.token_file, args.timeout)
    try:
        with http or target.client() as client:
            code: int = args.run(Api(client, target.describe()), args, output)
            return code
    except ApiError as exc:
        output.problem(exc.problem)
        return EXIT_REFUSED if exc.code == "preflight-failed" else EXIT_ERROR
    except Unreachable as exc:
        print(f"luoctl: {exc}", file=output.err)
        print(
            "hint: is luod running with its REST API? is --socket/--url right? "
            "the socket needs root or group luod",
            file=output.err,
        )
        return EXIT_UNREACHABLE
    except LocalError as exc:
        print(f"luoctl: {exc}", file=output.err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
