"""The kernels of a qualification's chain (issue 14 §1): each one's image, and how it boots
(its initrd, its command line), checked before the first step so that a chain that could not
boot one of its kernels is refused at once, with a code and a hint, instead of failing halfway.

A kernel's ``cmdline`` of None boots it with the running kernel's command line (as ``luoctl
update start --reuse-cmdline``), read in the kernel the step leaves.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luod.core import preflight
from luod.core.preflight import Status
from luod.errors import LuodError

CMDLINE_MAX = 2048  # x86's COMMAND_LINE_SIZE: kexec_file_load refuses a longer one


@dataclass(frozen=True)
class ChainKernel:
    image: Path
    initrd: Path | None = None
    cmdline: str | None = None  # None: the running kernel's command line


def check_boot(kernel: ChainKernel) -> None:
    """Refuse (LuodError ``bad-chain``) an initrd luod cannot read or a command line the next
    kernel could not take sessions with."""
    if kernel.initrd is not None:
        problem = _unreadable(kernel.initrd)
        if problem:
            raise LuodError(
                "bad-chain",
                f"the initrd of {kernel.image}, {kernel.initrd}, {problem}",
                "name the initrd file that boots this kernel (e.g. /boot/initrd.img-RELEASE)",
            )
    if kernel.cmdline is not None:
        _check_cmdline(kernel)


def _check_cmdline(kernel: ChainKernel) -> None:
    if len(kernel.cmdline or "") >= CMDLINE_MAX:
        raise LuodError(
            "bad-chain",
            f"the command line of {kernel.image} has {len(kernel.cmdline or '')} bytes",
            f"keep it under {CMDLINE_MAX} bytes (x86's COMMAND_LINE_SIZE)",
        )
    verdict = preflight.next_cmdline(kernel.cmdline or "")
    if verdict.status is Status.FAIL:
        raise LuodError(
            "bad-chain", f"the command line of {kernel.image}: {verdict.message}", verdict.hint
        )


def _unreadable(path: Path) -> str:
    """Why ``path`` is no initrd luod can load ('' when it is a readable regular file)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if not os.access(path, os.R_OK):
        return "is not readable by luod"
    return ""


def describe(kernel: ChainKernel) -> dict[str, Any]:
    """The kernel as its image declares it, with how the chain boots it (the report's)."""
    from luod.core import compat  # the handover-ABI readers: loaded by the first request

    facts, problem = compat.CACHE.facts(kernel.image)
    if facts is None:
        raise LuodError("bad-chain", problem, "name kernel images luod can read")
    declared = facts.declared
    return {
        "image": str(kernel.image),
        "release": declared.release,
        "version": declared.version,
        "kho": declared.kho,
        "luo": declared.luo,
        "handlers": dict(declared.handlers),
        "initrd": str(kernel.initrd) if kernel.initrd else None,
        "cmdline": kernel.cmdline,
    }
