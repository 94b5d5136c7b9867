"""luoctl's arguments, checked here before anything is sent: a typo is a usage error (exit 2)
that names the argument, never a request luod has to refuse.

luoctl imports nothing of luod's server side (it is a REST client), so the few limits it shares
with luod are restated here; tests/unit/test_luoctl_args.py checks that they agree with luod's.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

VM_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,57}")
"""luod.core.model.VM_ID: a VM id is also a path segment of the REST API."""
DEADLINE_PHASES: Final = ("preparing", "freezing", "frozen", "reclaiming", "aborting")
MAX_DEADLINE: Final = 7 * 24 * 3600.0
TOKEN: Final = re.compile(r"[\x21-\x7e]+")
"""What an HTTP header value may carry (visible ASCII): anything else is not a token."""


def vm_id(text: str) -> str:
    if not VM_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a VM id (letters, digits, '.', '_', '-'; at most 58; "
            "starting with a letter or digit)"
        )
    return text


def deadline(text: str) -> tuple[str, float]:
    phase, sep, seconds = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not PHASE=SECONDS")
    if phase not in DEADLINE_PHASES:
        raise argparse.ArgumentTypeError(
            f"{phase!r} has no deadline (phases: {', '.join(DEADLINE_PHASES)})"
        )
    return phase, _seconds(seconds, f"the deadline of {phase}", MAX_DEADLINE)


def timeout(text: str) -> float:
    return _seconds(text, "the timeout", math.inf)


def _seconds(text: str, what: str, most: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if math.isnan(value) or not 0 < value <= most or math.isinf(value):
        bound = f"at most {most:.0f}" if math.isfinite(most) else "finite"
        raise argparse.ArgumentTypeError(f"{what} must be more than 0 s and {bound}, not {text}")
    return value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def absolute_path(text: str) -> str:
    """A path on this host, made absolute here: luod resolves nothing in its own directory."""
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a path")
    return os.path.abspath(os.path.expanduser(text))


def url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// URL (e.g. https://host:8443)"
        )
    return text.rstrip("/")


def read_token(path: Path) -> str:
    """The bearer token in ``path``; ValueError saying what is wrong with the file."""
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot read the token file {path}: {why}") from exc
    if not TOKEN.fullmatch(token):
        what = "is empty" if not token else "does not hold one token (one line, visible ASCII)"
        raise ValueError(f"the token file {path} {what}")
    return token
