"""After the kexec: hand every preserved fd back to its owner, then FINISH (docs/kernel.md §5.5,
§5.6).

luod never FINISHes or closes a retrieved session before every file in it was handed out —
that would destroy them — unless the owner says so explicitly (DONE with force).
"""

from __future__ import annotations

import structlog

from luod.core.access import Peer
from luod.core.model import FileRecord, Mode, VmRecord, VmState
from luod.core.registry import Registry
from luod.errors import LuodError
from luod.kernel import LuoError, OwnedFd

log = structlog.get_logger("luod.reclaim")


def reclaim(
    registry: Registry, peer: Peer, vm_id: str, names: tuple[str, ...] | None
) -> list[tuple[FileRecord, OwnedFd]]:
    vm = _incoming(registry, peer, vm_id, Mode.HANDOVER)
    wanted = list(vm.files.values()) if names is None else [_file(vm, n) for n in names]
    try:
        fds = registry.retrieve(vm, [f.token for f in wanted], peer.cgroup)
    except LuoError as exc:
        raise LuodError.from_luo(exc) from exc
    for record in wanted:
        record.reclaimed = True
    if all(f.reclaimed for f in vm.files.values()):
        vm.touch(VmState.RECLAIMED)
    registry.record(vm)
    log.info("vm-reclaimed", vm=vm_id, files=[f.name for f in wanted], cgroup=peer.cgroup)
    return list(zip(wanted, fds, strict=True))


def retrieve_bytes(vm: VmRecord, names: tuple[str, ...] | None) -> int:
    """What a RECLAIM of ``names`` (None: every file) would retrieve, in bytes: the kernel's
    work is linear in it (docs/kernel.md §6.4). Unknown names count nothing (refused later)."""
    files = vm.files.values() if names is None else [vm.files[n] for n in names if n in vm.files]
    return sum(f.size for f in files if not f.reclaimed)


def finish_bytes(vm: VmRecord) -> int:
    """What a DONE would destroy (force): the files never reclaimed, in bytes."""
    return sum(f.size for f in vm.files.values() if not f.reclaimed)


def claim(registry: Registry, peer: Peer, vm_id: str) -> OwnedFd:
    """Delegation: the owner gets the retrieved session fd itself (luod keeps a duplicate)."""
    vm = _incoming(registry, peer, vm_id, Mode.DELEGATION)
    fd = registry.delegate_fd(vm)
    vm.touch(VmState.RECLAIMED)
    registry.record(vm)
    log.info("vm-claimed", vm=vm_id)
    return fd


def done(registry: Registry, peer: Peer, vm_id: str, force: bool) -> None:
    vm = registry.get(vm_id, peer)
    if vm.state not in (VmState.INCOMING, VmState.RECLAIMED, VmState.LOST):
        raise LuodError("wrong-state", f"VM {vm_id!r} is {vm.state}", "DONE ends a reclaim")
    left = [f.name for f in vm.files.values() if not f.reclaimed]
    if vm.mode is Mode.HANDOVER and left and not force:
        raise LuodError(
            "unreclaimed-files",
            f"files not reclaimed yet: {', '.join(left)}",
            "FINISH would destroy them: RECLAIM them, or send DONE with force",
        )
    finish = vm.mode is Mode.HANDOVER and registry.has_session(vm.id)
    try:
        registry.forget(vm, finish=finish)
    except LuoError as exc:
        raise LuodError.from_luo(exc) from exc
    log.info("vm-done", vm=vm_id, destroyed=left if force else [])


def _incoming(registry: Registry, peer: Peer, vm_id: str, mode: Mode) -> VmRecord:
    vm = registry.get(vm_id, peer)
    if vm.mode is not mode:
        verb = "CLAIM" if vm.mode is Mode.DELEGATION else "RECLAIM"
        raise LuodError("wrong-mode", f"VM {vm_id!r} is in {vm.mode} mode", f"use {verb}")
    if vm.state not in (VmState.INCOMING, VmState.RECLAIMED):
        raise LuodError(
            "wrong-state",
            f"VM {vm_id!r} is {vm.state}, nothing to reclaim",
            "reclaim works after a live update; before it the VM is still preserved",
        )
    return vm


def _file(vm: VmRecord, name: str) -> FileRecord:
    record = vm.files.get(name)
    if record is None:
        raise LuodError(
            "unknown-file",
            f"VM {vm.id!r} has no file {name!r}",
            f"its files: {', '.join(vm.files) or 'none'}",
        )
    return record
