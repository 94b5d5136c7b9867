"""A real luod without its sockets (a ``Daemon`` on the simulator, started but not serving), the
REST facade over it (events wired as the daemon wires them), and fake VMM connections."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from luod.core.access import AccessPolicy, Peer
from luod.core.custodian import Custody
from luod.daemon.daemon import Daemon
from luod.daemon.kexec_step import KexecSettings
from luod.daemon.settings import Settings
from luod.daemon.update import UpdateRequest
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.rest.adapter import DaemonFacade
from luod.rest.port import DaemonPort
from luod.vmm import codec, parse
from luod.vmm.codec import Frame
from tests.contract.harness import FAKE_BZIMAGE as FAKE

FAKE_BZIMAGE = FAKE  # a synthetic bzImage the simulator's kernel can update into


class FakeVmm:
    """Stands in for a VMM's socket connection: keeps every frame luod pushes to it."""

    def __init__(self, uid: int = 0) -> None:
        self.peer = Peer(uid, uid, os.getpid())
        self.subscribed: set[str] = set()
        self.capabilities: frozenset[str] = frozenset()  # what luod granted in HELLO
        self.closed = False
        self.frames: list[dict[str, Any]] = []

    def push(self, out: codec.Outgoing) -> None:
        for fd in out.fds:
            fd.close()
        self.frames.append(json.loads(out.line))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.frames if m.get("event") == name]


class Luod:
    """One luod on the simulator in ``state``, built through the daemon's own door
    (``Daemon.startup``) without its sockets; ``facade`` is what the REST app talks to, listening
    on the daemon's events as luod.rest.serving makes it listen."""

    def __init__(
        self,
        state: Path,
        *,
        custody: Custody | None = None,
        kexec: KexecSettings | None = None,
        access: AccessPolicy | None = None,
    ) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.kernel = state / "bzImage"
        self.kernel.write_bytes(FAKE_BZIMAGE)
        settings = Settings.simulated(state, access=access or AccessPolicy.default())
        self.daemon = Daemon(settings, custody=custody, kexec=kexec)
        self.daemon.startup(asyncio.create_task)
        self.registry = self.daemon.registry
        self.custody = self.daemon.custody
        self.handler = self.daemon.handler
        self.driver = self.daemon.driver
        self.connections = self.daemon.connections
        port = DaemonPort(self.registry, self.driver, self.daemon.qualifications)
        self.facade = DaemonFacade(port)
        self.daemon.events.listen(self.facade.publish)

    @property
    def kexeced(self) -> bool:
        return self.daemon.kernel_gone

    async def ask(
        self, vmm: FakeVmm, message: dict[str, Any], fds: tuple[OwnedFd, ...] = ()
    ) -> dict[str, Any]:
        try:
            request = parse.decode_request(Frame(json.dumps(message).encode(), fds))
            out = await self.handler.handle(vmm, request)
        except LuodError as exc:
            out = codec.encode(codec.error_reply(exc.cmd, exc.seq, exc))
        for fd in out.fds:
            fd.close()
        reply: dict[str, Any] = json.loads(out.line)
        return reply

    async def handover_vm(self, vm_id: str = "vm1", size: int = 4096) -> FakeVmm:
        """A VM whose VMM registered and preserved one memfd of ``size`` bytes."""
        vmm = FakeVmm()
        ram = OwnedFd(os.memfd_create("ram0"))
        os.ftruncate(ram.fileno(), size)
        hello = {"cmd": "HELLO", "capabilities": ["freeze", "resume", "progress", "done"]}
        assert (await self.ask(vmm, hello))["ok"]
        assert (await self.ask(vmm, {"cmd": "REGISTER", "id": vm_id}))["ok"]
        preserve = {"cmd": "PRESERVE", "id": vm_id, "files": ["ram0"]}
        assert (await self.ask(vmm, preserve, (ram,)))["ok"]
        return vmm

    async def kexec(self, vmms: dict[str, FakeVmm]) -> None:
        """An update of these VMs (by id) to its end: every VMM answers FREEZE with READY and
        the (simulated) kexec ends this luod's update; ``die()`` is the caller's."""
        self.driver.start(UpdateRequest(self.kernel))
        await until(lambda: all(vmm.events("FREEZE") for vmm in vmms.values()))
        for vm_id, vmm in vmms.items():
            await self.ask(vmm, {"cmd": "READY", "id": vm_id})
        await self.driver.wait()
        assert self.kexeced

    def die(self) -> None:
        """What kill -9 (or the kexec) leaves of this luod: its fds close, its registry's and
        its state-directory lock among them; nothing else runs."""
        self.registry.close()
        self.driver.log.close()
        self.daemon.state_lock.close()

    def close(self) -> None:
        self.registry.close()
        self.daemon.shutdown()


async def until(condition: Callable[[], object], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)
