"""``luoctl``: drive luod's live updates from a shell. The one place that turns luoctl's
errors into messages and exit codes (luod.cli.output): an error is one line saying what and
why, and a hint; ``--debug`` adds the details. luoctl never ends in a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import TextIO

import httpx
import shtab

from luod.cli import live
from luod.cli.client import Api, ApiError, LocalError, Target, Unreachable
from luod.cli.output import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Output,
)
from luod.cli.parser import PREAMBLE, build_parser, check_vm_words

UNREACHABLE_HINT = (
    "is luod running with its REST API? is --socket/--url right? "
    "the socket needs root or group luod"
)
TOKEN_HINT = "over TCP luod wants its bearer token: pass --token-file (or $LUOCTL_TOKEN_FILE)"


def main(
    argv: list[str] | None = None,
    *,
    http: httpx.Client | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``http``: a client to use instead of connecting (tests inject one over the ASGI app)."""
    try:
        return _main(argv, http, out or sys.stdout, err or sys.stderr)
    except BrokenPipeError:  # the reader of our output is gone (``luoctl vms | head -1``)
        _silence(out or sys.stdout)
        return EXIT_PIPE


def _main(argv: list[str] | None, http: httpx.Client | None, out: TextIO, err: TextIO) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "vm":
            check_vm_words(parser, args)
        if (check := getattr(args, "check", None)) is not None:
            check(args)  # a subcommand's checks across its options (exit 2)
    except SystemExit as exc:  # --help, --version, or a usage error (2)
        return int(exc.code or 0)
    output = Output(getattr(args, "json", False), out, err)
    if args.run is None:
        return completion(parser, args, output)
    return _run(args, output, http)


def completion(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Output) -> int:
    print(shtab.complete(parser, shell=args.shell, preamble=PREAMBLE), file=out.out)  # type: ignore[arg-type]
    return EXIT_OK


def _run(args: argparse.Namespace, output: Output, http: httpx.Client | None) -> int:
    target = Target(args.socket, args.url, args.token_file, args.timeout)
    debug = getattr(args, "debug", False)
    try:
        with http or target.client() as client:
            run = live.choose(args, output)
            code: int = run(Api(client, target.describe()), args, output)
            return code
    except ApiError as exc:
        output.problem(exc.problem)
        if exc.code == "unauthorized" and not args.token_file:
            output.error("no token was sent", TOKEN_HINT)
        return EXIT_REFUSED if exc.code == "preflight-failed" else EXIT_ERROR
    except Unreachable as exc:
        output.error(str(exc), UNREACHABLE_HINT)
        _details(output, exc, debug)
        return EXIT_UNREACHABLE
    except LocalError as exc:
        output.error(str(exc), "check --token-file: it holds luod's token, one line")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # main's
    except Exception as exc:  # a bug, or a reply luoctl cannot read: one line, not a traceback
        output.error(f"unexpected {type(exc).__name__}: {exc}", "run again with --debug")
        _details(output, exc, debug)
        return EXIT_ERROR


def _details(output: Output, exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc, file=output.err)


def _silence(stream: TextIO) -> None:
    """Python flushes stdout at exit: point it at /dev/null so that fails no more."""
    try:
        fileno = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
