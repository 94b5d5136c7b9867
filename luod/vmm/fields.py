"""Validators of a request's fields, pure: each takes the decoded JSON object (or one value) and
returns the checked value or raises ``LuodError`` with a code and a hint. ``luod.vmm.codec``
builds its requests from them; the limits they enforce are listed in docs/limits.md."""

from __future__ import annotations

from typing import Any, Final

from luod.core.model import FILE_KINDS as KINDS
from luod.core.model import FILE_NAME, VM_ID, FileSpec
from luod.errors import LuodError

SHOWN_CHARS: Final = 64
"""An echoed value (a bad id, name, command) is cut to this many characters: the reply that
names it must stay far below the frame limit, whatever the client sent (issue 13, finding 1)."""
MAX_PAGE: Final = 1000


def shown(value: Any) -> str:
    """``repr(value)``, cut to SHOWN_CHARS characters: what an error may echo of the input."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def bad(key: str, wanted: str, got: str) -> LuodError:
    return LuodError("bad-request", f"field {key!r}: {got}", f"{key} must be {wanted}")


def vm_id(data: dict[str, Any], key: str = "id", optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not VM_ID.fullmatch(value):
        raise LuodError(
            "bad-id",
            f"invalid VM id {shown(value)}",
            "VM ids match [A-Za-z0-9][A-Za-z0-9._-]{0,57}",
        )
    return value


def name(value: Any) -> str:
    if not isinstance(value, str) or not FILE_NAME.fullmatch(value):
        raise LuodError(
            "bad-name",
            f"invalid file name {shown(value)}",
            "file names match [A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        )
    return value


def optional_str(data: dict[str, Any], key: str, limit: int = 4096) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or "\0" in value or surrogates(value):
        wanted = f"a string of at most {limit} characters without NUL or lone surrogates"
        raise bad(key, wanted, shown(value))
    return value


def surrogates(text: str) -> bool:
    """A lone surrogate (JSON's "\\ud800") is no Unicode text: a path holding one made os.stat
    raise UnicodeEncodeError, an internal error (found by tests/fuzz)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def file_spec(item: Any) -> FileSpec:
    if isinstance(item, str):
        return FileSpec(name(item))
    if not isinstance(item, dict):
        raise bad("files[]", "a name or {name, kind}", type(item).__name__)
    kind = item.get("kind", "memfd")
    if kind not in KINDS:
        raise bad("files[].kind", f"one of {', '.join(KINDS)}", shown(kind))
    return FileSpec(name(item.get("name")), kind)


def page_limit(data: dict[str, Any]) -> int | None:
    value = data.get("limit")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PAGE:
        raise bad("limit", f"an integer from 1 to {MAX_PAGE}", shown(value))
    return value
