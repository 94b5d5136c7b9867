"""A provisional operator command over the VMM socket (until luoctl/REST): update, abort,
history. Prints the reply as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from luod.errors import LuodError
from luod.vmm.client import Client

SOCKET = "/run/luod/liveupdate.sock"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", default=SOCKET)
    sub = parser.add_subparsers(dest="command", required=True)
    update = sub.add_parser("update")
    update.add_argument("--kernel", required=True)
    update.add_argument("--cmdline")
    update.add_argument("--freezing", type=float)
    update.add_argument("--no-wait", action="store_true")
    sub.add_parser("abort")
    sub.add_parser("history")
    args = parser.parse_args()
    with Client(args.socket) as client:
        try:
            reply = run(client, args)
        except LuodError as exc:
            reply = {"error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}
    print(json.dumps(reply, indent=1))
    return 0


def run(client: Client, args: argparse.Namespace) -> object:
    if args.command == "update":
        options: dict[str, object] = {"wait": not args.no_wait}
        if args.cmdline:
            options["cmdline"] = args.cmdline
        if args.freezing:
            options["deadlines"] = {"freezing": args.freezing}
        return client.update(args.kernel, **options)
    if args.command == "abort":
        return client.abort()
    return client.history()


if __name__ == "__main__":
    sys.exit(main())
