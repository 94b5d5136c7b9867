"""The one rule for names of fds held in custody (standard library only: the keeper imports it).

Every custody kind accepts exactly what systemd's fd store accepts (``fdname_is_valid``): ASCII
without control characters, no ``:`` (the separator of ``$LISTEN_FDNAMES``), at most 255 bytes.
We also refuse the empty name, which systemd would file as ``stored``. Using the strictest rule
everywhere means a name that works with the keeper or in tests cannot fail under systemd.
"""

from __future__ import annotations

from typing import Final

MAX_NAME: Final = 255


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a custody name, or None when it can."""
    if not name:
        return "the name is empty"
    if len(name) > MAX_NAME:
        return f"the name has {len(name)} characters, more than {MAX_NAME}"
    for char in name:
        if char == ":":
            return "the name contains ':' (the $LISTEN_FDNAMES separator)"
        if not " " <= char <= "~":
            return f"the name contains {char!r} (only printable ASCII is allowed)"
    return None


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid custody name, else raise ValueError saying why."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"invalid custody fd name {name!r}: {problem}")
    return name
