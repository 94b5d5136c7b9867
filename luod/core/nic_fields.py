"""Checked reading of the JSON objects that describe network devices (luod.core.nic).

A NIC record crosses the kexec in the manifest, and a NIC declaration comes from a VMM: neither
is trusted. Every value is checked for type and range here, and a bad one is a LuodError that
names the field (``nics[1].tap.owner``), says what was expected and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from luod.errors import LuodError

IFNAMSIZ: Final = 16
"""The kernel's buffer for an interface name, NUL included: names have at most 15 bytes."""
U32_MAX: Final = 0xFFFFFFFF
MAC: Final = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
NAME_HINT: Final = (
    "an interface name has 1 to 15 bytes, no '/', ':', '%' or white space, and is not '.' or '..'"
)


def bad(code: str, where: str, message: str, hint: str) -> LuodError:
    return LuodError(code, f"{where}: {message}", hint)


def check_ifname(name: object, where: str) -> str:
    """The kernel's dev_valid_name, plus no '%' (a template such as ``tap%d``, not a name)."""
    if not isinstance(name, str):
        raise bad("bad-nic-name", where, f"expected a string, got {type(name).__name__}", NAME_HINT)
    size = len(name.encode())
    if not 0 < size < IFNAMSIZ:
        raise bad("bad-nic-name", where, f"{name!r} has {size} bytes", NAME_HINT)
    if name in (".", "..") or any(c in "/:%" or c.isspace() for c in name):
        raise bad("bad-nic-name", where, f"{name!r} is not a valid interface name", NAME_HINT)
    return name


def check_mac(mac: object, where: str) -> str:
    """A unicast Ethernet address, written aa:bb:cc:dd:ee:ff (returned in lower case)."""
    hint = "write a unicast MAC as six hex pairs, aa:bb:cc:dd:ee:ff (first octet even, not 0)"
    if not isinstance(mac, str) or not MAC.fullmatch(mac.lower()):
        raise bad("bad-nic-mac", where, f"{mac!r} is not a MAC address", hint)
    mac = mac.lower()
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise bad("bad-nic-mac", where, f"{mac} is multicast or zero", hint)
    return mac


class Fields:
    """One JSON object being read: each accessor checks one key; ``done`` refuses the rest."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise bad(
                "bad-nic-record",
                where,
                f"expected an object, got {type(data).__name__}",
                "see luod.core.nic for the fields",
            )
        self.data: Mapping[str, Any] = data
        self.where = where
        self.seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.where}.{key}"

    def raw(self, key: str, default: object = ...) -> Any:
        self.seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is ...:
            raise bad("bad-nic-record", self.at(key), "missing", "the field is required")
        return default

    def name(self, key: str) -> str:
        return check_ifname(self.raw(key), self.at(key))

    def optional_name(self, key: str) -> str | None:
        value = self.raw(key, None)
        return None if value is None else check_ifname(value, self.at(key))

    def mac(self, key: str) -> str | None:
        value = self.raw(key, None)
        return None if value is None else check_mac(value, self.at(key))

    def boolean(self, key: str, default: object = ...) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise bad("bad-nic-record", self.at(key), f"{value!r} is not true or false", "")
        return value

    def integer(self, key: str, low: int, high: int, default: object = ...) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(
                "bad-nic-record",
                self.at(key),
                f"{value!r} is not an integer in [{low}, {high}]",
                "the value is out of the kernel's range for this attribute",
            )
        return value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        return None if self.raw(key, None) is None else self.integer(key, low, high)

    def choice(self, key: str, choices: tuple[str, ...], default: object = ...) -> str:
        value = self.raw(key, default)
        if value not in choices:
            raise bad(
                "bad-nic-record", self.at(key), f"{value!r} is not one of {', '.join(choices)}", ""
            )
        return str(value)

    def items(self, key: str) -> list[Any]:
        value = self.raw(key, [])
        if not isinstance(value, list):
            raise bad("bad-nic-record", self.at(key), "expected a list", "")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise bad(
                "bad-nic-record",
                self.where,
                f"unknown field(s) {', '.join(map(repr, unknown))}",
                "remove them, or update luod (a newer one may know them)",
            )
