"""The repository stands alone: no absolute path of any one machine in the tracked tree.

An absolute path must lead into a standard system directory (the FHS ones luod, its units, its
package and its test guests use), or be one of the few things that only look like paths (REST
routes, a placeholder). Anything else (a build machine's /work, /home, /root, ...) is a path that
works on one machine only: kernels are found through $LUOD_TEST_KERNEL, ../shared/kernel/
relative to the repository, or the cache and build (tests/vm/get-kernel).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
SYSTEM_DIRS: Final = frozenset(
    {"bin", "boot", "dev", "etc", "lib", "lib64", "media", "mnt", "opt", "proc", "run"}
    | {"sbin", "srv", "sys", "tmp", "usr", "var"}
)
NOT_PATHS: Final = {
    "v1": "the REST API's routes (/v1/status, ...)",
    "vms": "a REST route relative to /v1 (luod/rest/app.py)",
    "update": "a REST route relative to /v1 (luod/rest/app.py)",
    "qualifications": "a REST route relative to /v1 (luod/rest/qualifications.py)",
    "build": "the build directory inside the sid build root (packaging/build-deb)",
    "path": "the placeholder /path/to/...",
    "nonexistent": "a path that exists nowhere on purpose (Debian's home for nobody)",
}
MACHINE_ROOTS: Final = ("work", "home")  # caught even alone (/root alone is root's HOME)
# An absolute path starts after whitespace, a quote, '=', '(' ... never after a word character,
# a dot, '/', ':' (URLs), '#' (JSON pointers), '$', '}', '*' or ']' (variables and globs), nor
# right after a quoted shell variable ("$dir"/x).
START: Final = r"(?<![\w.:/~$@{}#*\-\]\)])(?<![\w}]\")"
MULTI: Final = re.compile(START + r"/([A-Za-z0-9_.-]+)/")
SINGLE: Final = re.compile(START + r"/(" + "|".join(MACHINE_ROOTS) + r")\b(?!/)")
SKIP: Final = {
    REPO / ".gitignore",  # its leading '/' anchors a pattern at the repository's root
    Path(__file__).resolve(),  # its examples are such paths
}


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    files = [REPO / name.decode() for name in names if name]
    return [f for f in files if f.is_file() and f not in SKIP and b"\0" not in f.read_bytes()]


def foreign_paths(text: str) -> list[str]:
    """Every absolute path in ``text`` that does not lead into a standard system directory."""
    found = [m.group(0) for m in SINGLE.finditer(text)]
    for match in MULTI.finditer(text):
        if match.group(1) not in SYSTEM_DIRS and match.group(1) not in NOT_PATHS:
            found.append(match.group(0))
    return found


def test_no_tracked_file_names_a_path_of_one_machine() -> None:
    files = tracked_text_files()
    assert len(files) > 100  # the whole tree was read, not an empty listing
    offenders = {
        str(f.relative_to(REPO)): paths
        for f in files
        if (paths := foreign_paths(f.read_text(errors="replace")))
    }
    assert offenders == {}


def test_the_check_catches_machine_paths_and_spares_system_ones() -> None:
    assert foreign_paths("look in /work/shared/kernel first") == ["/work/"]
    assert foreign_paths('KERNEL="/home/me/bzImage"; ls /root/.cache') == ["/home/", "/root/"]
    assert foreign_paths("dir=/work") == ["/work"]
    clean = (
        'open("/dev/liveupdate"); /run/luod/api.sock /usr/bin/env GET /v1/status HOME=/root '
        '"$dir"/x ../shared/kernel https://deb.debian.org/debian "#/components/schemas"'
    )
    assert foreign_paths(clean) == []
