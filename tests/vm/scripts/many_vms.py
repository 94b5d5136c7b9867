"""Hundreds of VMs at once on the real kernel (tests/vm/test_many_vms.py): VMMs as asyncio
clients of luod in one process, each with a 4 KiB memfd holding its own pattern.

``hand-over N SOCKET``, before the kexec: N VMs register and preserve, then each answers FREEZE
with READY (the kexec ends the process); prints ``all-handed-over`` once every VM is preserved.
``reclaim N SOCKET STATE_DIR OUT``, after it: every VM reclaims at once, its memory is compared
with its pattern, DONE; once luod recorded the update, OUT says how many came back intact and
what the record says.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from luod.core import timeline
from luod.kernel import fdtable, memfd
from luod.vmm.async_client import AsyncClient

SIZE = 4096


def pattern(vm: str) -> bytes:
    return hashlib.sha256(vm.encode()).digest() * (SIZE // 32)


def names(count: int) -> list[str]:
    return [f"vm{n:04}" for n in range(count)]


async def hand_over(count: int, socket: str) -> None:
    preserved: list[str] = []

    async def one(vm: str) -> None:
        client = AsyncClient(socket)
        await client.connect()
        with memfd.create(vm, SIZE) as fd:
            os.pwrite(fd.fileno(), pattern(vm), 0)
            await client.register(vm)
            await client.preserve(vm, {"ram0": fd})
        preserved.append(vm)
        if len(preserved) == count:
            print("all-handed-over", flush=True)
        if await client.wait_event("FREEZE") is not None:
            await client.ready(vm)
        await asyncio.sleep(3600)  # the kexec ends this process

    await asyncio.gather(*(one(vm) for vm in names(count)))


async def reclaim(count: int, socket: str) -> list[str]:
    """The VMs whose memory did not come back as it was."""
    bad: list[str] = []

    async def one(vm: str) -> None:
        client = AsyncClient(socket)
        await client.connect()
        try:
            fds = await client.reclaim(vm)
            if os.pread(fds["ram0"].fileno(), SIZE, 0) != pattern(vm):
                bad.append(vm)
            for fd in fds.values():
                fd.close()
            await client.done(vm)
        finally:
            client.close()

    await asyncio.gather(*(one(vm) for vm in names(count)))
    return bad


def recorded(state: Path) -> dict[str, Any]:
    """The update's record, once luod wrote it to its history (DONE of the last VM ends it)."""
    for _ in range(600):
        records = timeline.read_history(state)
        if records and records[-1]["outcome"] != "running":
            return records[-1]
        time.sleep(0.1)
    raise TimeoutError("the update did not end")


def main(argv: list[str]) -> None:
    fdtable.raise_limit()  # a socket per VM, and its memfd for a moment
    count = int(argv[1])
    if argv[0] == "hand-over":
        asyncio.run(hand_over(count, argv[2]))
        return
    bad = asyncio.run(reclaim(count, argv[2]))
    record = recorded(Path(argv[3]))
    verdict = {
        "verified": count - len(bad),
        "bad": bad,
        "outcome": record["outcome"],
        "blackouts": sum(1 for value in record["blackout"].values() if value),
    }
    Path(argv[4]).write_text(json.dumps(verdict))


if __name__ == "__main__":
    main(sys.argv[1:])
