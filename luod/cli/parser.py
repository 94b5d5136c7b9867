"""luoctl's command line: every argument typed and checked here (luod.cli.args), so that a bad
one is a usage error before anything is sent. The man pages are made from this parser
(``build_parser``; man/ and the Makefile's ``man`` target)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import shtab

import luod
from luod.cli import args, commands, follow, qualify
from luod.cli.client import DEFAULT_SOCKET
from luod.cli.output import EPILOG

VM_IDS = {
    "bash": "_shtab_luoctl_vm_ids",
    "zsh": "_shtab_luoctl_vm_ids",
}
"""Completes VM ids from the running luod (``luoctl vms --ids``), defined in PREAMBLE."""
PREAMBLE = {
    "bash": '_shtab_luoctl_vm_ids() { compgen -W "$(luoctl vms --ids 2>/dev/null)" -- "$1"; }',
    "zsh": '_shtab_luoctl_vm_ids() { compadd -- ${(f)"$(luoctl vms --ids 2>/dev/null)"}; }',
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON documents"
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="errors in full detail"
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
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _host_commands(commands_, common)
    _update_commands(commands_, common)
    qualify.register(commands_, common)
    shells = commands_.add_parser(
        "completion", help="print a shell completion script (VM ids come from the running luod)"
    )
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
    parser.add_argument(
        "--url", type=args.url, default=env("LUOCTL_URL"), help="luod over TCP ($LUOCTL_URL)"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=env("LUOCTL_TOKEN_FILE"),
        help="bearer token for --url ($LUOCTL_TOKEN_FILE)",
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    parser.add_argument("--timeout", type=args.timeout, default=30.0, help=argparse.SUPPRESS)


def _host_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser(
        "status", parents=[common], help="the host at a glance: kernel, VMs, the update"
    ).set_defaults(run=commands.status)
    checks = sub.add_parser("preflight", parents=[common], help="check a next kernel")
    _kernel_options(checks)
    checks.set_defaults(run=commands.preflight)
    listing = sub.add_parser("vms", parents=[common], help="the VMs luod holds")
    listing.add_argument("--ids", action="store_true", help="only their ids, one a line")
    listing.set_defaults(run=commands.vms)
    one = sub.add_parser(
        "vm",
        parents=[common],
        help="one VM and its files, or drop one",
        usage="luoctl vm [--json] ID\n       luoctl vm [--json] drop ID [--force]",
        description="Show one VM; 'vm drop ID' unpreserves and forgets a VM whose VMM is gone "
        "(root): refused while its VMM is connected or an update runs, unless --force.",
    )
    one.add_argument("words", nargs="+", metavar="[drop] ID").complete = VM_IDS
    one.add_argument("--force", action="store_true", help="drop even during an update")
    one.set_defaults(run=commands.vm)
    past = sub.add_parser("history", parents=[common], help="past updates")
    past.add_argument("--last", type=args.positive, metavar="N", help="only the last N")
    past.set_defaults(run=commands.history)


def _update_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    update = sub.add_parser("update", help="start, follow, wait for or abort an update")
    verbs = update.add_subparsers(dest="verb", required=True, metavar="VERB")
    start = verbs.add_parser("start", parents=[common], help="start an update (root)")
    _kernel_options(start)
    start.add_argument(
        "--deadline",
        type=args.deadline,
        action="append",
        default=[],
        metavar="PHASE=SECONDS",
        help=f"deadline of a phase ({', '.join(args.DEADLINE_PHASES)})",
    )
    start.add_argument("--dry-run", action="store_true", help="only run the preflight checks")
    start.set_defaults(run=commands.update_start)
    abort = verbs.add_parser("abort", parents=[common], help="abort the running update (root)")
    abort.add_argument("--reason", help="recorded, and sent to the VMMs with RESUME")
    abort.set_defaults(run=commands.update_abort)
    waiting = verbs.add_parser(
        "wait",
        parents=[common],
        help="wait until the running update ends; its outcome is the exit status",
        description="Block until the running update ends and print its outcome (exit 0 "
        "completed, 4 aborted or failed, 6 timed out). Before the kexec it ends with "
        "'rebooting into KERNEL' (exit 0); run after the reboot, it waits until every VM is "
        "reclaimed.",
    )
    waiting.add_argument(
        "--timeout", dest="wait_timeout", type=args.timeout, metavar="SECONDS",
        help="give up after SECONDS (exit 6)",
    )  # fmt: skip
    waiting.set_defaults(run=follow.update_wait)
    verbs.add_parser(
        "watch", parents=[common], help="follow the update live (plain lines when piped)"
    ).set_defaults(run=follow.update_watch)
    verbs.add_parser("show", parents=[common], help="the running or last update").set_defaults(
        run=commands.update_show
    )


def _kernel_options(parser: argparse.ArgumentParser) -> None:
    path = args.absolute_path
    parser.add_argument("--kernel", type=path, required=True, help="the next kernel (bzImage)")
    parser.add_argument("--initrd", type=path, help="its initrd")
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


def check_vm_words(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    """``vm ID`` or ``vm drop ID [--force]``: which, and the id checked (exit 2 otherwise)."""
    words: list[str] = ns.words
    if len(words) == 2 and words[0] == "drop":
        ns.run = commands.vm_drop
    elif len(words) != 1:
        parser.error("vm takes an ID, or 'drop ID'")
    elif ns.force:
        parser.error("--force goes with 'vm drop ID'")
    try:
        ns.id = args.vm_id(words[-1])
    except argparse.ArgumentTypeError as exc:
        parser.error(f"argument ID: {exc}")
