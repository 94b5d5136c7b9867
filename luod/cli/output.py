"""How luoctl prints, and the exit codes it ends with (stable: scripts and fleet tools branch
on them; the man page lists them, from EPILOG)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, TextIO

from luod.cli import render

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1  # the operation failed: luod refused it (its code and hint are printed)
EXIT_USAGE: Final = 2
EXIT_REFUSED: Final = 3  # refused by the preflight checks
EXIT_ABORTED: Final = 4  # the update was aborted, or failed and rolled back
EXIT_UNREACHABLE: Final = 5
EXIT_TIMEOUT: Final = 6
EXIT_PIPE: Final = 141  # stdout closed under us: as a shell reports a tool killed by SIGPIPE
EXIT_OF_OUTCOME: Final = {
    "completed": EXIT_OK,
    "completed-with-unreclaimed": EXIT_ERROR,
    "aborted": EXIT_ABORTED,
    "failed": EXIT_ABORTED,
    "refused": EXIT_REFUSED,
}
EPILOG: Final = """\
exit status:
  0  success (update watch/wait: the update completed, or the host is rebooting into it)
  1  the operation failed: luod refused it (the message gives its code and a hint)
  2  usage error: a bad argument, or an unusable --token-file (nothing was sent)
  3  refused by the preflight checks (preflight, update start, update start --dry-run)
  4  the update was aborted, or its reboot failed and it rolled back (update watch/wait)
  5  luod is unreachable (not running, wrong --socket/--url, or no permission)
  6  timed out (update wait --timeout)
  141  stdout was closed early (a pipe reader quit), as if killed by SIGPIPE
These codes are stable: scripts may rely on them.

luoctl talks to luod's REST API on its unix socket (default /run/luod/api.sock, root or
group luod), or with --url and --token-file over TCP. Errors are one line (what and why) and
a hint; --debug adds the details."""


class Output:
    """Prints documents as JSON (``--json``) or as the lines ``render`` makes of them."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json, self.out, self.err = as_json, out, err

    def show(self, doc: Any, lines: Callable[[Any], list[str]]) -> None:
        text = json.dumps(doc, sort_keys=True) if self.as_json else "\n".join(lines(doc))
        print(text, file=self.out, flush=True)

    def line(self, text: str, doc: dict[str, Any] | None = None) -> None:
        """A line for people, or with ``--json`` the document it stands for (if any)."""
        if self.as_json:
            if doc is not None:
                print(json.dumps(doc, sort_keys=True), file=self.out, flush=True)
        else:
            print(text, file=self.out, flush=True)

    def problem(self, doc: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(doc, sort_keys=True), file=self.out, flush=True)
        else:
            print("\n".join(render.problem(doc)), file=self.err, flush=True)

    def error(self, message: str, hint: str | None = None) -> None:
        print(f"luoctl: {message}", file=self.err, flush=True)
        if hint:
            print(f"hint: {hint}", file=self.err, flush=True)
