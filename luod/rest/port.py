"""``DaemonPort``: what the REST API may ask of luod, on luod's main event loop, in plain data.

Everything here takes and returns JSON values (dicts, lists, strings, numbers), so that it can
answer across the link to the REST worker (luod.rest.link, luod.rest.serving) and luod's process
never imports the HTTP stack or its models (pydantic, FastAPI: about 35 MB, bench/NOTES.md,
Memory). The REST side turns these values into response models (luod.rest.port_facade).
Translation only: every decision stays in the update driver and the registry.

Reads (``read``, ``vm``) are synchronous: an answer is built in one step of the loop, with no
event published in the middle of it, which the event stream's consistency relies on
(luod.rest.link). Mutations may suspend (a kernel image read in a worker thread, an abort
waiting for the VMs to resume).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import luod
from luod.core import preflight, qualify
from luod.core.model import VmRecord
from luod.core.registry import Registry
from luod.daemon import drop
from luod.daemon.connections import Liveness
from luod.daemon.nics import summary
from luod.daemon.qualification import QualificationDriver, QualifyRequest
from luod.daemon.qualification_chain import ChainKernel
from luod.daemon.update import UpdateDriver, UpdateRequest
from luod.errors import LuodError
from luod.rest.link import Refused

ROOT: Final = 0
READS: Final = frozenset({"status", "vms", "update"})
CALLS: Final = frozenset(
    {
        "vm",
        "drop_vm",
        "preflight",
        "start_update",
        "abort",
        "qualify",
        "qualifications",
        "qualification",
    }
)


class DaemonPort:
    def __init__(
        self,
        registry: Registry,
        driver: UpdateDriver,
        qualifications: QualificationDriver | None = None,
    ) -> None:
        self.registry = registry
        self.driver = driver
        self.qualifier = qualifications

    # --- reads ----------------------------------------------------------------------------------
    def read(self, name: str) -> dict[str, Any]:
        """``status``, ``vms`` or ``update``; anything else is ``unknown-call``."""
        if name not in READS:
            raise LuodError("unknown-call", f"no read {name[:40]!r}", "a luod of another version?")
        reader: Callable[[], dict[str, Any]] = getattr(self, f"_{name}")
        return reader()

    def _status(self) -> dict[str, Any]:
        """From the boot's KernelInfo the registry keeps: ``backend.info()`` probes again,
        reading all of /dev/kmsg, which a status poll or a metrics scrape must not cost."""
        info = self.registry.info
        files = [f for vm in self.registry.vms.values() for f in vm.files.values()]
        return {
            "host": socket.gethostname(),
            "kernel": info.release,
            "luo_supported": info.device_present,
            "liveupdate_number": info.liveupdate_number,
            "phase": str(self.driver.machine.phase),
            "vms": len(self.registry.vms),
            "sessions": self.registry.open_sessions(),
            "files": len(files),
            "preserved_bytes": sum(f.size for f in files),
            "backend": self.registry.backend_name,
            "version": luod.__version__,
            "custody": self.registry.custody_health._asdict(),
        }

    def _vms(self) -> dict[str, Any]:
        return {"vms": [self._vm(vm) for vm in self.registry.vms.values()]}

    def _update(self) -> dict[str, Any]:
        record = self.driver.record
        return {
            "phase": str(self.driver.machine.phase),
            "update": record.to_dict() if record else None,
        }

    def vm(self, vm_id: str) -> dict[str, Any]:
        """Raises LuodError ``unknown-vm``."""
        return self._vm(self.registry.get(vm_id))

    def _vm(self, vm: VmRecord) -> dict[str, Any]:
        return vm_data(vm, self.driver.connections.liveness(vm.id))

    # --- mutations ------------------------------------------------------------------------------
    def drop_vm(self, vm_id: str, force: bool, uid: int | None) -> dict[str, Any]:
        caller = _root_only(uid, "dropping a VM")
        by = "token" if uid is None else f"uid {caller}"
        released = drop.drop_vm(self.registry, self.driver, vm_id, bool(force), by)
        return {
            "id": released.id,
            "state": str(released.state),
            "forced": released.forced,
            "released": {
                "session": released.session,
                "files": released.files,
                "bytes": released.bytes,
                "destroyed": released.destroyed,
            },
        }

    async def preflight(self, request: Mapping[str, Any], uid: int | None) -> dict[str, Any]:
        """Root only (it reads files as root: any other caller would learn which exist). The
        images are read in a worker thread first (``compat.CACHE``), so the checks on the
        loop only stat them."""
        caller = _root_only(uid, "a preflight")
        wanted = update_request(request, caller)
        await asyncio.to_thread(self.driver.read_images, wanted.kernel)
        checks = self.driver.check(wanted)
        return {"ok": not preflight.failed(checks), "checks": [c.to_dict() for c in checks]}

    async def start_update(self, request: Mapping[str, Any], uid: int | None) -> dict[str, Any]:
        """``uid`` None: a TCP caller with the bearer token, who acts as root. Raises
        ``Refused`` (the checks with it), LuodError ``update-running`` or ``not-allowed``."""
        caller = _root_only(uid, "starting an update")
        wanted = update_request(request, caller)
        await asyncio.to_thread(self.driver.read_images, wanted.kernel)
        try:
            record = self.driver.start(wanted)
        except preflight.Refused as refusal:
            raise Refused(refusal, [c.to_dict() for c in refusal.checks]) from refusal
        return record.to_dict()

    async def abort(self, reason: str | None, uid: int | None) -> dict[str, Any]:
        """Abort the running update and wait until every VM resumed."""
        caller = _root_only(uid, "aborting an update")
        by = "token" if uid is None else f"uid {caller}"
        self.driver.abort(reason or f"abort requested over the REST API by {by}", by)
        record = await self.driver.wait()
        return {"update": record.to_dict() if record else None}

    # --- qualifications -------------------------------------------------------------------------
    def _qualifier(self) -> QualificationDriver:
        if self.qualifier is None:
            raise LuodError("not-supported", "this luod runs no qualifications", "")
        return self.qualifier

    def qualify(self, request: Mapping[str, Any], uid: int | None) -> dict[str, Any]:
        caller = _root_only(uid, "qualifying a live update")
        options = qualify.Options(
            int(request["large_mib"]), int(request["many_files"]), int(request["sessions"])
        )
        wanted = QualifyRequest(
            tuple(_chain_kernel(k) for k in request["chain"]),
            options,
            with_vms=bool(request["with_vms"]),
            qemu_canary=bool(request["qemu_canary"]),
            requested_by=caller,
        )
        return self._qualifier().start(wanted)

    def qualifications(self) -> list[dict[str, Any]]:
        return self._qualifier().listing()

    def qualification(self, qid: str) -> dict[str, Any]:
        return self._qualifier().get(qid)


def _root_only(uid: int | None, what: str) -> int:
    """As on the VMM socket (UPDATE, ABORT): the socket's group may look, only root may act.
    ``uid`` None is the TCP token, which stands for root. Returns the caller's uid."""
    caller = ROOT if uid is None else int(uid)
    if caller != ROOT:
        raise LuodError("not-allowed", f"{what} needs root (uid {caller})", "ask the host operator")
    return caller


def update_request(request: Mapping[str, Any], uid: int) -> UpdateRequest:
    """A preflight's or a start's body (the REST model's fields, as JSON)."""
    deadlines = request.get("deadline_seconds") or {}
    initrd = request.get("initrd")
    return UpdateRequest(
        Path(str(request["kernel"])),
        Path(str(initrd)) if initrd else None,
        None if request.get("reuse_cmdline", True) else request.get("cmdline"),
        {str(phase): float(seconds) for phase, seconds in deadlines.items()},
        False,
        uid,
        bool(request.get("allow_unknown_abi", False)),
    )


def vm_data(vm: VmRecord, liveness: Liveness) -> dict[str, Any]:
    return {
        "id": vm.id,
        "owner_uid": vm.owner.uid,
        "mode": vm.mode.value,
        "state": str(vm.state),
        "session": vm.session,
        "files": [f.to_dict() for f in vm.files.values()],
        "note": vm.note,
        "rejected": dict(vm.rejected),
        "connected": liveness.connected,
        "disconnected_since": liveness.since,
        "nics": [nic.to_dict() for nic in vm.nics],
        "net": None if vm.net_report is None else summary(vm.net_report),
    }


def _chain_kernel(kernel: str | Mapping[str, Any]) -> ChainKernel:
    if isinstance(kernel, str):
        return ChainKernel(Path(kernel))
    initrd = kernel.get("initrd")
    return ChainKernel(
        Path(str(kernel["image"])), Path(str(initrd)) if initrd else None, kernel.get("cmdline")
    )
