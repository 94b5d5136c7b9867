"""``luod-qemu``'s entry point: a start slot of the host (luod.vmm.start_gate) is taken before
luod-qemu's own imports, the larger part of its start, and held until its VM runs.

The slots' directory is shared by every luod-qemu of the host: ``$LUOD_VMM_START_DIR``, else
``start-slots`` in the runtime directory systemd made for luod-qemu@ (``$RUNTIME_DIRECTORY``),
else in ``/run/luod-qemu`` (a directory of its own: no VM's ``<id>.lock`` there can be a slot's
file). ``python -m luod.qemu.cli`` runs luod-qemu without the gate.
"""

from __future__ import annotations

import os
import sys

from luod.vmm.start_gate import settings, take

TYPE_CHECKING = False  # typing's own would import typing, ~2 ms before the gate (mypy: True)
if TYPE_CHECKING:
    from collections.abc import Mapping

DIRECTORY_ENV = "LUOD_VMM_START_DIR"
DEFAULT_DIRECTORY = "/run/luod-qemu"  # luod.qemu.cli's default --runtime-dir
SUBDIRECTORY = "start-slots"


def gate_directory(environ: Mapping[str, str] = os.environ) -> str:
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]  # one per RuntimeDirectory=
    return environ.get(DIRECTORY_ENV) or os.path.join(runtime or DEFAULT_DIRECTORY, SUBDIRECTORY)


def entry() -> None:
    usage = sys.argv[1:2] in (["-h"], ["--help"])  # no VM starts: no slot
    slot = None if usage else take(gate_directory(), *settings())
    from luod.qemu.cli import main

    sys.exit(main(slot=slot))


if __name__ == "__main__":
    entry()
