"""The handover ABI: can kernel B take what kernel A hands over? (docs/kernel.md §2.3, §3.2,
§7.3, §8.) Pure: bytes and facts in, a verdict out; the reading is luod.kernel.images'.

Versioned compatible strings travel with a live update, and B must declare the same ones:

- KHO's (the root of the KHO tree, ``kho-v4``): a B with another one ignores the handover, so
  every session is lost;
- LUO's (``struct luo_ser``, ``luo-v5``): a B with another one **panics** at boot;
- one per file handler (``memfd-v2``): a B without a handler of that string cannot restore the
  session: every open of /dev/liveupdate returns EIO and the memory is gone;
- and the page size, which is the size of LUO's serialization blocks.

A declares its KHO and LUO strings in debugfs and every string in its image; B in its image
(``luod.core.bzimage``): the strings are NUL-terminated, alone (not inside a longer word).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from luod.core import bzimage
from luod.kernel.images import Declared, HandoverBlobs

HANDLER_PREFIXES: Final = {"memfd": "memfd"}  # fd kind -> its file handler's compatible prefix
ELF_PAGE_SIZE: Final = {62: 4096}  # e_machine EM_X86_64: 4 KiB pages only
FDT_MAGIC: Final = 0xD00DFEED
ITEMS: Final = {
    "kho": "KHO",
    "luo": "LUO",
}
CONSEQUENCE: Final = {
    "kho": "the next kernel would ignore the handover: every session lost",
    "luo": "the next kernel would panic at boot (docs/kernel.md §8.3)",
    "handler": "the next kernel could not restore those files: /dev/liveupdate fails with EIO "
    "and the memory is lost (docs/kernel.md §3.2)",
    "page": "the next kernel could not read LUO's blocks",
}


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What an image declares, and how it was read."""

    declared: Declared
    compression: str


@dataclass(frozen=True, slots=True)
class Side:
    """One kernel of the update as far as luod could read it. A string that is ``None`` and
    not in ``unknown`` is known to be absent; ``handlers`` is None when unknown."""

    label: str  # "running 7.2.13", "next 7.3.4"
    release: str
    version: str
    kho: str | None
    luo: str | None
    handlers: Mapping[str, str] | None
    page_size: int | None
    unknown: Mapping[str, str] = field(default_factory=dict)  # item -> why it is not known
    sources: Mapping[str, str] = field(default_factory=dict)  # item -> where it was read

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "version": self.version,
            "kho": self.kho,
            "luo": self.luo,
            "handlers": dict(self.handlers) if self.handlers is not None else None,
            "page_size": self.page_size,
            "unknown": dict(self.unknown),
            "sources": dict(self.sources),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # pass | warn | fail
    message: str
    hint: str = ""


# --- reading bytes ---------------------------------------------------------------------------
def image_facts(image: bytes) -> ImageFacts:
    """Raises bzimage.ImageError when the image cannot be read to the end."""
    vmlinux = bzimage.vmlinux(image)
    strings = compatible_strings(vmlinux.data, ("kho", "luo", *HANDLER_PREFIXES.values()))
    handlers = {k: text for k, p in HANDLER_PREFIXES.items() if (text := strings.get(p))}
    declared = Declared(
        release=vmlinux.header.release,
        version=vmlinux.header.version,
        kho=strings.get("kho"),
        luo=strings.get("luo"),
        handlers=handlers,
        page_size=elf_page_size(vmlinux.data),
    )
    return ImageFacts(declared, vmlinux.compression)


def compatible_strings(vmlinux: bytes, prefixes: Iterable[str]) -> dict[str, str | None]:
    """PREFIX-vN for each prefix (None: absent). Two versions of one prefix is an error.

    One scan per prefix: a pattern that starts with a literal is searched at memchr speed,
    and the "not inside a longer word" test is done on the few hits (a look-behind would make
    the scan try every byte: 10x slower on a 15 MB vmlinux)."""
    result: dict[str, str | None] = {}
    for prefix in prefixes:
        pattern = re.compile(re.escape(prefix.encode()) + rb"-v\d+(?=\0)")
        versions = {
            m.group(0).decode()
            for m in pattern.finditer(vmlinux)
            if not m.start() or vmlinux[m.start() - 1 : m.start()] not in _WORD
        }
        if len(versions) > 1:
            raise bzimage.ImageError(
                f"the image declares several {prefix} ABIs: {sorted(versions)}"
            )
        result[prefix] = next(iter(versions), None)
    return result


_WORD: Final = frozenset(
    bytes([c]) for c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)


def elf_page_size(vmlinux: bytes) -> int | None:
    if len(vmlinux) < 20 or vmlinux[4] != 2:  # ELFCLASS64
        return None
    (machine,) = struct.unpack_from("<H", vmlinux, 18)
    return ELF_PAGE_SIZE.get(machine)


def fdt_compatible(blob: bytes) -> str:
    """The root node's ``compatible`` of a flattened device tree (KHO's root).

    debugfs ``kho/out/fdt`` shows the tree at the size it had when the file was created, and
    the tree grows after that: on 7.2.13 the file held 233 of the tree's 285 bytes, its strings
    block cut before the name "compatible" [measured]. So a root property whose name lies past
    the end counts when its value is a versioned string (``kho-v4``)."""
    if len(blob) < 40 or struct.unpack_from(">I", blob, 0)[0] != FDT_MAGIC:
        raise ValueError("not a flattened device tree")
    struct_at, strings_at = struct.unpack_from(">II", blob, 8)
    unnamed: list[str] = []
    for name, value in _root_properties(blob, struct_at):
        text = value.split(b"\0", 1)[0].decode("ascii", errors="replace")
        if strings_at + name < len(blob):
            if blob[strings_at + name :].split(b"\0", 1)[0] == b"compatible":
                return text
        elif _VERSIONED.fullmatch(text):
            unnamed.append(text)
    if len(unnamed) == 1:
        return unnamed[0]
    raise ValueError("the tree's root has no compatible property")


def _root_properties(blob: bytes, offset: int) -> list[tuple[int, bytes]]:
    """(name offset, value) of each property of the root node (they precede its children)."""
    found: list[tuple[int, bytes]] = []
    depth = 0
    while offset + 4 <= len(blob):
        (token,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        if token == 1:  # FDT_BEGIN_NODE: name, NUL, padding
            depth += 1
            if depth > 1:
                break
            offset = _align4(blob.index(b"\0", offset) + 1)
        elif token == 3:  # FDT_PROP: len, nameoff, value
            length, name = struct.unpack_from(">II", blob, offset)
            found.append((name, blob[offset + 8 : offset + 8 + length]))
            offset = _align4(offset + 8 + length)
        elif token in (2, 9):  # FDT_END_NODE, FDT_END
            break
    return found


_VERSIONED: Final = re.compile(r"[a-z][a-z0-9_]*-v\d+")


def luo_compatible(blob: bytes) -> str:
    """``struct luo_ser``'s compatible (char[8] at offset 0; docs/kernel.md §8.1)."""
    if len(blob) >= 4 and struct.unpack_from(">I", blob, 0)[0] == FDT_MAGIC:
        return fdt_compatible(blob)  # a future LUO that hands over a tree
    if len(blob) < 32:
        raise ValueError(f"{len(blob)} bytes, struct luo_ser has 32")
    return blob[:8].split(b"\0", 1)[0].decode("ascii", errors="replace")


def _align4(offset: int) -> int:
    return (offset + 3) & ~3


# --- the two sides ---------------------------------------------------------------------------
def next_side(facts: ImageFacts | None, problem: str = "") -> Side:
    if facts is None:
        reasons = dict.fromkeys(("kho", "luo", "handlers", "page size"), problem)
        return Side("next kernel", "?", "", None, None, None, None, reasons)
    d = facts.declared
    source = f"its image ({facts.compression})"
    return Side(
        _label("next", d.release, d.version),
        d.release,
        d.version,
        d.kho,
        d.luo,
        d.handlers,
        d.page_size,
        {} if d.page_size else {"page size": "not an x86-64 vmlinux"},
        dict.fromkeys(("kho", "luo", "handlers"), source),
    )


def running_side(
    release: str,
    version: str,
    page_size: int,
    blobs: HandoverBlobs,
    image: ImageFacts | None,
    image_problem: str,
) -> Side:
    """The running kernel: KHO and LUO from debugfs, else from its image (once that image is
    shown to be the running kernel: same release and ``uname -v``); handlers from the image."""
    if image is not None and (problem := _not_running(image.declared, release, version)):
        image, image_problem = None, problem
    unknown: dict[str, str] = {}
    sources: dict[str, str] = {}
    values: dict[str, str | None] = {}
    for item, blob, parse in (
        ("kho", blobs.fdt, fdt_compatible),
        ("luo", blobs.luo, luo_compatible),
    ):
        debugfs = _debugfs_item(item, blob, parse, blobs.missing)
        if isinstance(debugfs, tuple):
            values[item], sources[item] = debugfs
        elif image is not None:
            values[item] = getattr(image.declared, item)
            sources[item] = f"the running kernel's image ({debugfs})"
        else:
            values[item] = None
            unknown[item] = f"{debugfs}; {image_problem}"
    if image is None:
        unknown["handlers"] = image_problem
    else:
        sources["handlers"] = "the running kernel's image"
    return Side(
        _label("running", release, version),
        release,
        version,
        values["kho"],
        values["luo"],
        image.declared.handlers if image is not None else None,
        page_size,
        unknown,
        sources,
    )


def _label(role: str, release: str, version: str) -> str:
    """ "running 7.2.13 #1": the build number tells two builds of one release apart."""
    build = version.split(" ", 1)[0]
    return f"{role} {release} {build}" if build.startswith("#") else f"{role} {release}"


def _debugfs_item(
    item: str, blob: bytes | None, parse: Any, missing: Mapping[str, str]
) -> tuple[str, str] | str:
    """(string, source), or why debugfs did not tell."""
    name = {"kho": "fdt", "luo": "luo"}[item]
    where = {"kho": "kho/out/fdt", "luo": "kho/out/sub_fdts/LUO"}[item]
    if blob is None:
        why = missing.get(name, "not read")
        if item == "kho":
            why += " (a kernel booted by a live update has none: docs/kernel.md §8.2)"
        return f"debugfs {where}: {why}"
    try:
        return str(parse(blob)), f"debugfs {where}"
    except (ValueError, IndexError, struct.error) as exc:
        return f"debugfs {where}: {exc}"


def _not_running(declared: Declared, release: str, version: str) -> str:
    if declared.release != release or (
        version and declared.version and declared.version != version
    ):
        return (
            f"the image given as the running kernel's is {declared.release} "
            f"{declared.version!r}, but the running kernel is {release} {version!r}"
        )
    return ""


def needed_kinds(file_kinds: Iterable[str], delegated: bool, running: Side) -> set[str]:
    """The fd kinds B must restore: luod's own state session is a memfd; a delegated VMM may
    preserve any kind the running kernel has a handler for."""
    kinds = {"memfd", *file_kinds}
    if delegated and running.handlers:
        kinds |= set(running.handlers)
    return kinds


# --- the verdict -----------------------------------------------------------------------------
def verdict(running: Side, next_: Side, kinds: Iterable[str], allow_unknown: bool) -> Verdict:
    mismatches, unknown = _compare(running, next_, sorted(kinds))
    if mismatches:
        return Verdict(
            "fail",
            "incompatible handover: " + "; ".join(mismatches),
            "boot a next kernel that declares the running kernel's ABI (luoctl preflight "
            "shows both); a known mismatch cannot be overridden",
        )
    if unknown and not allow_unknown:
        return Verdict(
            "fail",
            "cannot tell whether the next kernel takes the handover: " + "; ".join(unknown),
            "mount debugfs, set kexec.running_image to the running kernel's image, or let the "
            "update go ahead unverified with --allow-unknown-abi (recorded in its history)",
        )
    if unknown:
        return Verdict(
            "warn",
            "not verified, operator override: " + "; ".join(unknown),
            "the update's history records the override",
        )
    return Verdict("pass", _agreed(running, next_, sorted(kinds)))


def _compare(a: Side, b: Side, kinds: list[str]) -> tuple[list[str], list[str]]:
    mismatches: list[str] = []
    unknown: list[str] = []
    for item, name in ITEMS.items():
        for side in (a, b):
            if item in side.unknown:
                unknown.append(f"{side.label}'s {name} ABI ({side.unknown[item]})")
        if item not in a.unknown and item not in b.unknown and getattr(a, item) != getattr(b, item):
            mismatches.append(
                f"{name} ABI {_shown(getattr(a, item))} ({a.label}) vs "
                f"{_shown(getattr(b, item))} ({b.label}): {CONSEQUENCE[item]}"
            )
    for side in (a, b):
        if side.handlers is None:
            reason = side.unknown.get("handlers", "not read")
            unknown.append(f"{side.label}'s file handlers ({reason})")
    if a.handlers is not None and b.handlers is not None:
        for kind in kinds:
            want, have = a.handlers.get(kind), b.handlers.get(kind)
            if want is not None and want != have:
                mismatches.append(
                    f"{kind} file handler {_shown(want)} ({a.label}) vs {_shown(have)} "
                    f"({b.label}): {CONSEQUENCE['handler']}"
                )
    if a.page_size and b.page_size and a.page_size != b.page_size:
        mismatches.append(f"page size {a.page_size} vs {b.page_size}: {CONSEQUENCE['page']}")
    elif b.page_size is None and "page size" in b.unknown:
        unknown.append(f"{b.label}'s page size ({b.unknown['page size']})")
    return mismatches, list(dict.fromkeys(unknown))


def _agreed(a: Side, b: Side, kinds: list[str]) -> str:
    handlers = [a.handlers[k] for k in kinds if a.handlers and k in a.handlers]
    strings = ", ".join(s for s in (a.kho, a.luo, *handlers) if s)
    pages = f"; {a.page_size >> 10} KiB pages" if a.page_size else ""
    return f"{strings} on both sides ({a.release} → {b.release}){pages}"


def _shown(value: str | None) -> str:
    return f"'{value}'" if value else "none"
