"""``luod-qemu``: start a QEMU VM under luod, or bring it back after a live update.

    luod-qemu run --id vm1 --ram 1G -- -machine q35 -drive file=disk.img,if=virtio ...
    luod-qemu restore --id vm1

``run`` restores the VM when luod holds it from before a kexec (so one command serves both
boots, e.g. in ``luod-qemu@.service``), else boots it afresh; ``restore`` only restores. luod-qemu
adds ``-m``, the memory backend on its RAM memfd, a QMP monitor and, when restoring,
``-incoming defer``; the rest of QEMU's command line is yours. Exit status: 0 when the VM
ended on purpose, 1 on an error (a JSON line ``*-failed`` and a message on stderr say which),
2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from luod.qemu.errors import QemuAdapterError
from luod.qemu.files import VmSpec, parse_size
from luod.qemu.options import Options
from luod.qemu.process import check_args
from luod.qemu.report import Log, err
from luod.qemu.supervisor import Supervisor
from luod.vmm.client import ConnectionBroken, LuodError
from luod.vmm.start_gate import WAIT, Slot

DEFAULT_SOCKET = "/run/luod/liveupdate.sock"
DEFAULT_RUNTIME = "/run/luod-qemu"
DEFAULT_QEMU = "qemu-system-x86_64"
WAIT_FOR_LUOD = 60.0
START_SLOTS = (  # the epilog of --help (and of the man page made from it)
    "At most one luod-qemu per CPU starts at once on a host (after a live update they all "
    "start together): each takes a start slot before its imports and frees it once its VM "
    "runs. LUOD_VMM_START_SLOTS sets how many (default: the CPUs it may run on; 0: no limit), "
    "LUOD_VMM_START_WAIT how long one waits for a slot before it starts anyway "
    f"(default {WAIT:g} s), "
    "LUOD_VMM_START_DIR where the slots are (default: start-slots in $RUNTIME_DIRECTORY, else "
    "/run/luod-qemu/start-slots)."
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="luod-qemu", description=__doc__.split("\n")[0], epilog=START_SLOTS
    )
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start (or restore) the VM and supervise it")
    restore = sub.add_parser("restore", help="after a live update: restore the VM, supervise it")
    run.add_argument("--ram", required=True, help="guest RAM size (64M, 1G)")
    for each in (run, restore):
        each.add_argument("--id", required=True, help="the VM's id in luod")
        each.add_argument("--qemu", help=f"QEMU binary (default {DEFAULT_QEMU}; when restoring: "
                          "the one the VM was started with)")  # fmt: skip
        each.add_argument("--socket", default=DEFAULT_SOCKET, help="luod's VMM socket")
        each.add_argument("--runtime-dir", type=Path, default=Path(DEFAULT_RUNTIME),
                          help="lock and status files (VM.json)")  # fmt: skip
        each.add_argument("--report", type=Path, help="append the per-VM results (JSON lines)")
        each.add_argument("--qmp-timeout", type=float, default=5.0, metavar="SECONDS",
                          help="limit of each QMP command (default 5)")  # fmt: skip
        each.add_argument("--start-timeout", type=float, default=60.0, metavar="SECONDS",
                          help="limit of QEMU's start, to its monitor's greeting")  # fmt: skip
        each.add_argument("--wait-for-luod", type=float, default=WAIT_FOR_LUOD, metavar="SECONDS",
                          help=f"wait for luod's socket while luod starts (default "
                          f"{WAIT_FOR_LUOD:g}): an init may start luod and the VMMs "
                          "at once")  # fmt: skip
    run.add_argument("qemu_args", nargs=argparse.REMAINDER, help="-- then QEMU's arguments")
    return top


def options(args: argparse.Namespace) -> Options:
    spec = None
    if args.command == "run":
        qemu_args = tuple(args.qemu_args[1:] if args.qemu_args[:1] == ["--"] else args.qemu_args)
        check_args(qemu_args)
        spec = VmSpec(args.id, parse_size(args.ram), args.qemu or DEFAULT_QEMU, qemu_args)
    return Options(
        vm=args.id,
        socket=args.socket,
        runtime_dir=args.runtime_dir,
        qmp_timeout=args.qmp_timeout,
        start_timeout=args.start_timeout,
        spec=spec,
        qemu=args.qemu,
        report=args.report,
        wait_for_luod=args.wait_for_luod,
    )


def main(argv: list[str] | None = None, slot: Slot | None = None) -> int:
    """luod-qemu; ``slot``: the host's start slot its entry point took (luod.qemu.start),
    released once the VM runs."""
    args = parser().parse_args(argv)
    try:
        return Supervisor(options(args), Log(args.id, args.report), slot).run()
    except QemuAdapterError as exc:
        err(exc.describe())
    except LuodError as exc:
        err(f"luod refused: {exc}")
    except (ConnectionBroken, OSError) as exc:
        err(f"cannot talk to luod at {args.socket}: {exc}")
    return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
