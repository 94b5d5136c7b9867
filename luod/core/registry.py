"""The VM registry: every VM's record and the LUO session luod holds for it.

All state changes go through here, and each is written to the disk manifest at once. Session
fds are deposited in custody the moment they exist, so a dying luod loses nothing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from luod.core import manifest as manifest_io
from luod.core.access import AccessPolicy, Peer, check_owner
from luod.core.custody import Custody
from luod.core.model import FileRecord, Mode, VmRecord, VmState
from luod.errors import LuodError
from luod.kernel import Backend, LuoError, OwnedFd, Session, memfd
from luod.kernel.charged import retrieve_charged
from luod.vmm.codec import FileSpec

log = structlog.get_logger("luod.registry")
JOURNAL_LIMIT = 512
Retriever = Callable[[Session, Sequence[int], str | None], list[OwnedFd]]


class Registry:
    def __init__(
        self,
        backend: Backend,
        custody: Custody,
        state_dir: Path,
        policy: AccessPolicy,
        retriever: Retriever | None = None,
    ) -> None:
        self.backend = backend
        self.custody = custody
        self.state_dir = state_dir
        self.policy = policy
        self.retriever: Retriever = retriever or _default_retriever(backend)
        self.info = backend.info()
        self.vms: dict[str, VmRecord] = {}
        self.sessions: dict[str, Session] = {}  # vm id -> its session
        self.state_session: Session | None = None  # session "luod", just before a kexec
        self.kexec_pending = False
        self.extra: dict[str, object] = {}  # carried in the manifest (the update timeline)
        self._journaled = 0
        self._snapshot_written = False  # journal lines need a snapshot of this boot before them
        self.previous: manifest_io.Manifest | None = None  # the manifest the last kernel left

    # --- persistence --------------------------------------------------------------------
    def manifest(self) -> manifest_io.Manifest:
        return manifest_io.Manifest(
            boot_id=self.info.boot_id,
            release=self.info.release,
            liveupdate_number=self.info.liveupdate_number,
            vms=dict(self.vms),
            kexec_pending=self.kexec_pending,
            extra=dict(self.extra),
        )

    def persist(self, durable: bool = False) -> None:
        """A full snapshot of the manifest on disk."""
        manifest_io.write_atomic(self.state_dir, self.manifest(), durable)
        self._journaled = 0
        self._snapshot_written = True

    def record(self, vm: VmRecord, files: Sequence[FileRecord] | None = None) -> None:
        """One VM changed: journal it (microseconds), snapshot now and then. With ``files``,
        only those files and the VM's state are journaled (cost independent of VM size)."""
        if files is None:
            self._journal({"vm": vm.to_dict()})
            return
        entry = {
            "id": vm.id,
            "state": str(vm.state),
            "updated": vm.updated,
            "files": [f.to_dict() for f in files],
        }
        self._journal({"vm_files": entry})

    def _journal(self, entry: dict[str, object]) -> None:
        self._journaled += 1
        if self._journaled > JOURNAL_LIMIT or not self._snapshot_written:
            self.persist()
        else:
            manifest_io.append_journal(self.state_dir, entry)

    # --- lookups ------------------------------------------------------------------------
    def get(self, vm_id: str, peer: Peer | None = None) -> VmRecord:
        vm = self.vms.get(vm_id)
        if vm is None:
            raise LuodError("unknown-vm", f"no VM {vm_id!r}", "REGISTER or SUBSCRIBE it first")
        if peer is not None:
            check_owner(vm, peer)
        return vm

    def session(self, vm: VmRecord) -> Session:
        session = self.sessions.get(vm.id)
        if session is None or session.closed:
            raise LuodError("wrong-state", f"VM {vm.id!r} has no LUO session", vm.note)
        return session

    def listing(self, peer: Peer, vm_id: str | None) -> list[VmRecord]:
        if vm_id is not None:
            return [self.get(vm_id, peer)]
        return [vm for vm in self.vms.values() if peer.uid in (0, vm.owner.uid)]

    # --- before the kexec ---------------------------------------------------------------
    def register(self, peer: Peer, vm_id: str, mode: Mode) -> VmRecord:
        self.policy.check(peer)
        existing = self.vms.get(vm_id)
        if existing is not None:
            check_owner(existing, peer)
            if existing.mode != mode:
                raise LuodError(
                    "wrong-mode",
                    f"VM {vm_id!r} is in {existing.mode} mode",
                    "DROP it first to change its mode",
                )
            return existing
        self._refuse_during_kexec()
        vm = VmRecord(vm_id, peer.as_owner(), mode)
        self._open_session(vm)
        self.vms[vm_id] = vm
        self.record(vm)
        log.info("vm-registered", vm=vm_id, mode=str(mode), uid=peer.uid, pid=peer.pid)
        return vm

    def preserve(
        self, peer: Peer, vm_id: str, specs: Sequence[FileSpec], fds: Sequence[OwnedFd]
    ) -> list[FileRecord]:
        """Preserve each fd under a new token. Takes ownership of ``fds`` (closes them)."""
        try:
            vm = self.get(vm_id, peer)
            self._check_preservable(vm, specs)
            added = [self._preserve_one(vm, spec, fd) for spec, fd in zip(specs, fds, strict=True)]
        finally:
            for fd in fds:
                fd.close()
        vm.touch(VmState.PRESERVED)
        self.record(vm, added)
        return added

    def drop(self, peer: Peer, vm_id: str) -> None:
        vm = self.get(vm_id, peer)
        self._refuse_during_kexec()
        if vm.state in (VmState.INCOMING, VmState.RECLAIMED):
            raise LuodError(
                "wrong-state",
                f"VM {vm_id!r} came through the update",
                "closing its session now would destroy unreclaimed files: "
                "RECLAIM them and send DONE (or DONE with force)",
            )
        self.forget(vm, finish=False)
        log.info("vm-dropped", vm=vm_id)

    def mark_ready(self, peer: Peer, vm_id: str) -> VmRecord:
        vm = self.get(vm_id, peer)
        if vm.mode is not Mode.DELEGATION:
            raise LuodError(
                "wrong-mode", f"VM {vm_id!r} is not delegated", "READY is for SUBSCRIBE"
            )
        vm.touch(VmState.PRESERVED)
        self.record(vm)
        return vm

    def delegate_fd(self, vm: VmRecord) -> OwnedFd:
        """A duplicate of the VM's session fd for its owner (luod keeps its own)."""
        return OwnedFd(os.dup(self.session(vm).fileno()))

    # --- internals ----------------------------------------------------------------------
    def _open_session(self, vm: VmRecord) -> None:
        try:
            session = self.backend.device.create_session(vm.session)
        except LuoError as exc:
            if exc.errno == errno.EEXIST:  # restore a valid block chain (docs/kernel.md §4.4)
                self.backend.device.create_session(f"luod-eexist-guard-{os.getpid()}").close()
                raise LuodError(
                    "session-exists",
                    f"a LUO session {vm.session!r} already exists",
                    "another process created it; luod will not share it",
                ) from exc
            raise LuodError.from_luo(exc) from exc
        self.sessions[vm.id] = session
        self.custody.deposit(vm.session, session)

    def _check_preservable(self, vm: VmRecord, specs: Sequence[FileSpec]) -> None:
        self._refuse_during_kexec()
        if vm.mode is not Mode.HANDOVER:
            raise LuodError(
                "wrong-mode", f"VM {vm.id!r} is delegated", "preserve into the session fd"
            )
        if vm.state not in (VmState.REGISTERED, VmState.PRESERVED):
            raise LuodError(
                "wrong-state", f"VM {vm.id!r} is {vm.state}", "PRESERVE is before a kexec"
            )
        for spec in specs:
            if spec.name in vm.files:
                raise LuodError(
                    "file-exists",
                    f"VM {vm.id!r} already has a file {spec.name!r}",
                    "a preserved file cannot be replaced: DROP the VM to start over",
                )

    def _preserve_one(self, vm: VmRecord, spec: FileSpec, fd: OwnedFd) -> FileRecord:
        token = vm.next_token()
        shape = memfd.inspect(fd)
        try:
            if shape.hugetlb:
                raise LuoError(
                    errno.ENOENT,
                    "PRESERVE_FD",
                    session=vm.session,
                    token=token,
                    hint="a hugetlb memfd has no LUO handler (docs/kernel.md §6.1): back "
                    "guest RAM with plain memfds",
                )
            self.session(vm).preserve(fd, token)
        except LuoError as exc:
            error = LuodError.from_luo(exc)
            if exc.errno == errno.ENOENT:
                if spec.kind != "memfd":
                    error.hint = f"Linux {self.info.release} has no LUO handler for {spec.kind}"
                vm.rejected[spec.name] = error.hint
                self.record(vm)
            raise error from exc
        record = FileRecord(spec.name, token, spec.kind, shape.size, exec_sealed=shape.exec_sealed)
        vm.rejected.pop(spec.name, None)
        vm.files[spec.name] = record
        log.info("file-preserved", vm=vm.id, file=spec.name, token=token, size=shape.size)
        return record

    def forget(self, vm: VmRecord, *, finish: bool) -> None:
        """Drop the VM and its session (FINISHed first when ``finish``), custody included."""
        session = self.sessions.pop(vm.id, None)
        if session is not None:
            if finish:
                session.finish()
            session.close()
        self.custody.withdraw(vm.session)
        del self.vms[vm.id]
        self._journal({"forget": vm.id})

    def _refuse_during_kexec(self) -> None:
        if self.kexec_pending:
            raise LuodError("wrong-state", "a kexec is in progress", "retry after the update")


def _default_retriever(backend: Backend) -> Retriever:
    if backend.name == "kernel":
        return retrieve_charged
    return lambda session, tokens, _: [session.retrieve(token) for token in tokens]
