"""The VM registry: every VM's record and the LUO session luod holds for it.

All state changes go through here, and each is written to the disk manifest at once. Session
fds are deposited in custody the moment they exist, so a dying luod loses nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import structlog

from luod.core import manifest as manifest_io
from luod.core import statedir, vetting
from luod.core.access import AccessPolicy, Peer, check_owner
from luod.core.custodian import Custody
from luod.core.custody_guard import CustodyGuard, CustodyHealth
from luod.core.limits import Limits
from luod.core.model import (
    STATE_SESSION,
    FileRecord,
    FileSpec,
    Mode,
    VmRecord,
    VmState,
)
from luod.core.state_session import StateSession
from luod.errors import LuodError
from luod.kernel import Backend, LuoError, OwnedFd, Session, memfd
from luod.kernel.charged import retrieve_charged

if TYPE_CHECKING:
    from luod.core.nic import NetRecord, NicDecl

log = structlog.get_logger("luod.registry")
JOURNAL_LIMIT = 512
HANDOFF_ROOM_BASE = 64 << 10
HANDOFF_ROOM_PER_VM = 2 << 10
"""The room token 1's memfd gets before the freeze (luod.core.state_session), beyond the size of
the snapshot (which holds the carried record so far): the freeze adds about 0.25 kB a VM to
the record (its freeze stamps), and a few transitions."""
Retriever = Callable[[Session, Sequence[int], str | None], list[OwnedFd]]


class Registry:
    """The VMs luod knows and the LUO session it holds for each; the only writer of that state.

    Built empty; ``restore`` fills it once at start-up (luod.core.recovery), and from then on
    every change goes through a method that also writes it down (journal or manifest).
    """

    def __init__(
        self,
        backend: Backend,
        custody: Custody,
        state_dir: Path,
        policy: AccessPolicy,
        retriever: Retriever | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._limits = limits or Limits()
        self._backend = backend
        self._custody = CustodyGuard(custody, self._held)
        self._state_dir = state_dir
        self._journal_file = statedir.AppendFile(state_dir / manifest_io.JOURNAL)
        self._policy = policy
        self._retriever: Retriever = retriever or _default_retriever(backend)
        self.info = backend.info()
        self._vms: dict[str, VmRecord] = {}
        self._sessions: dict[str, Session] = {}  # vm id -> its session
        self._state_session = StateSession(backend, self._custody)  # just before a kexec
        self._kexec_pending = False
        self._staged: list[bytes] | None = None  # journal lines since the handoff's snapshot
        self._staged_snapshot = b""  # that snapshot, should token 1's lines outgrow their room
        self._carried: dict[str, object] = {}  # carried in the manifest (the update timeline)
        self._carried_json: dict[str, bytes] = {}  # of those, the JSON given with them
        self._update_lines: Sequence[bytes] = ()  # the kexec line's changes to the update record
        self._journaled = 0
        self._snapshot_written = False  # journal lines need a snapshot of this boot before them
        self._previous: manifest_io.Manifest | None = None  # the manifest the last kernel left

    # --- what others may read -----------------------------------------------------------
    @property
    def vms(self) -> Mapping[str, VmRecord]:
        return MappingProxyType(self._vms)

    @property
    def previous(self) -> manifest_io.Manifest | None:
        """The manifest the previous kernel's luod left (after a live update), else None."""
        return self._previous

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    @property
    def kexec_pending(self) -> bool:
        return self._kexec_pending

    @property
    def kexec_staged(self) -> bool:
        """The handoff's snapshot is written (``stage_kexec``), the kexec not yet called off."""
        return self._staged is not None

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def custody_kind(self) -> str:
        return self._custody.kind

    @property
    def custody_health(self) -> CustodyHealth:
        return self._custody.health

    def check_custody(self) -> CustodyHealth:
        """Is the custodian there? A lost one is replaced and given every session again."""
        return self._custody.check()

    def _held(self) -> dict[str, Session]:
        """Every session luod holds, by its custody name (what a new custodian must get)."""
        held = {self._vms[v].session: s for v, s in self._sessions.items() if v in self._vms}
        if self._state_session.session is not None:
            held[STATE_SESSION] = self._state_session.session
        return {name: session for name, session in held.items() if not session.closed}

    def open_sessions(self) -> int:
        return sum(not s.closed for s in self._sessions.values())

    def admit(self, peer: Peer) -> None:
        """Raise ``not-allowed`` unless the access policy lets ``peer`` talk to luod."""
        self._policy.check(peer)

    @property
    def access(self) -> AccessPolicy:
        """Who may talk to luod and see what (a frozen policy: the REST worker gets a copy)."""
        return self._policy

    def sees_all(self, uid: int | None) -> bool:
        """May ``uid`` see every owner's VMs, the events and the history (luod.core.access)?"""
        return self._policy.sees_all(uid)

    def require_operator(self, peer: Peer, what: str) -> None:
        self._policy.require_operator(peer, what)

    # --- persistence --------------------------------------------------------------------
    def manifest(self) -> manifest_io.Manifest:
        return manifest_io.Manifest(
            boot_id=self.info.boot_id,
            release=self.info.release,
            liveupdate_number=self.info.liveupdate_number,
            vms=dict(self._vms),
            kexec_pending=self._kexec_pending,
            extra=dict(self._carried),
        )

    def persist(self, durable: bool = False) -> None:
        """A full snapshot of the manifest on disk."""
        manifest_io.write_atomic(self._state_dir, self.manifest(), durable)
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

    def carry(self, key: str, value: object, text: str | None = None) -> None:
        """Keep ``value`` in the manifest under ``key``, so the next kernel's luod reads it
        (``previous.extra``): the running update's record, staged before the freeze.
        ``text``: ``value`` as ``jsontext.dumps`` writes it, encoded by the caller ahead:
        ``begin_kexec`` writes it as it is. Carrying ``update`` drops its change lines."""
        self._carried[key] = value
        if text is None:
            self._carried_json.pop(key, None)
        else:
            self._carried_json[key] = text.encode()  # here, not in the pause (ASCII JSON)
        if key == "update":
            self._update_lines = ()

    def carry_update_lines(self, lines: Sequence[bytes]) -> None:
        """The carried update record's change lines since it was carried, as
        luod.core.record_lines.encode wrote them: ``begin_kexec``'s kexec line gives them after
        the record, and the next kernel's luod applies them (luod.core.manifest.kexec_line)."""
        self._update_lines = lines

    def _journal(self, entry: dict[str, object]) -> None:
        self._journaled += 1
        line = manifest_io.journal_line(entry)
        if self._staged is not None:  # the handoff carries it too (begin_kexec)
            self._staged.append(line)
        try:
            if self._journaled > JOURNAL_LIMIT or not self._snapshot_written:
                self.persist()
            else:
                self._journal_file.write(line)
        except OSError as exc:  # disk full, out of fds...: the next change writes it all
            self._snapshot_written = False
            raise statedir.write_failed(self._state_dir, exc) from exc

    # --- lookups ------------------------------------------------------------------------
    def get(self, vm_id: str, peer: Peer | None = None) -> VmRecord:
        vm = self._vms.get(vm_id)
        if vm is None:
            raise LuodError("unknown-vm", f"no VM {vm_id!r}", "REGISTER or SUBSCRIBE it first")
        if peer is not None:
            check_owner(vm, peer)
        return vm

    def session(self, vm: VmRecord) -> Session:
        session = self._sessions.get(vm.id)
        if session is None or session.closed:
            raise LuodError("wrong-state", f"VM {vm.id!r} has no LUO session", vm.note)
        return session

    def listing(self, peer: Peer, vm_id: str | None) -> list[VmRecord]:
        if vm_id is not None:
            return [self.get(vm_id, peer)]
        sees_all = self._policy.sees_all(peer.uid)
        return [vm for vm in self._vms.values() if sees_all or vm.owner.uid == peer.uid]

    def has_session(self, vm_id: str) -> bool:
        return vm_id in self._sessions

    # --- before the kexec ---------------------------------------------------------------
    def register(self, peer: Peer, vm_id: str, mode: Mode) -> VmRecord:
        self._policy.check(peer)
        existing = self._vms.get(vm_id)
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
        self._limits.check_room_for_a_vm(self._vms.values(), peer.uid)
        vm = VmRecord(vm_id, peer.as_owner(), mode)
        self._open_session(vm)
        self._vms[vm_id] = vm
        self.record(vm)
        log.info("vm-registered", vm=vm_id, mode=str(mode), uid=peer.uid, pid=peer.pid)
        return vm

    def preserve(
        self, peer: Peer, vm_id: str, specs: Sequence[FileSpec], fds: Sequence[OwnedFd]
    ) -> list[FileRecord]:
        """Preserve each fd under a new token. Takes ownership of ``fds`` (closes them).

        Every fd is vetted before any is preserved (issue 13, finding 8). LUO cannot unpreserve
        one file (docs/kernel.md §4.6), so when the kernel refuses a file midway the ones before
        it stay preserved: they are recorded, and the error names them.
        """
        added: list[FileRecord] = []
        try:
            vm = self.get(vm_id, peer)
            self._check_preservable(vm, specs)
            shapes = [self._vet(vm, spec, fd) for spec, fd in zip(specs, fds, strict=True)]
            for spec, fd, shape in zip(specs, fds, shapes, strict=True):
                added.append(self._preserve_one(vm, spec, fd, shape))
        except LuodError as exc:
            if added:
                self._record_partial(vm, added, exc)
            raise
        finally:
            for fd in fds:
                fd.close()
        vm.touch(VmState.PRESERVED)
        self.record(vm, added)
        return added

    def _record_partial(self, vm: VmRecord, added: list[FileRecord], error: LuodError) -> None:
        vm.touch(VmState.PRESERVED)
        self.record(vm, added)
        names = ", ".join(f.name for f in added)
        error.message += f"; already preserved before it, and kept: {names}"
        error.hint += (
            "; LUO cannot unpreserve one file: PRESERVE the remaining files again, "
            "or DROP the VM to start over"
        )

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

    def declare_nics(self, peer: Peer, vm_id: str, nics: Sequence[NicDecl]) -> VmRecord:
        """The VM's network devices from now on (recorded at the next prepare)."""
        vm = self.get(vm_id, peer)
        self._refuse_during_kexec()
        vm.nics = tuple(nics)
        vm.touch()
        self.record(vm)
        log.info("vm-nics", vm=vm_id, nics=[nic.name for nic in nics])
        return vm

    def set_net(self, vm_id: str, net: NetRecord | None) -> None:
        """At prepare: what the VM's devices look like, carried by the manifest."""
        vm = self.get(vm_id)
        vm.net, vm.net_report = net, None
        self.record(vm)

    def set_net_report(self, vm_id: str, report: dict[str, Any]) -> None:
        """After the kexec: what the rebuild of the VM's devices found and did."""
        vm = self.get(vm_id)
        vm.net_report = report
        self.record(vm)

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

    def retrieve(self, vm: VmRecord, tokens: Sequence[int], cgroup: str | None) -> list[OwnedFd]:
        """After the kexec: the VM's preserved files by token, charged to ``cgroup``."""
        return self._retriever(self.session(vm), tokens, cgroup)

    # --- start-up and the kexec -----------------------------------------------------------
    def restore(
        self,
        vms: Mapping[str, VmRecord],
        sessions: Mapping[str, Session],
        previous: manifest_io.Manifest | None = None,
    ) -> None:
        """Start-up: the VMs on record and the sessions recovered for them (luod.core.recovery),
        and the manifest the previous kernel left, if this boot came through a live update."""
        self._vms, self._sessions = dict(vms), dict(sessions)
        self._previous = previous
        self.persist()

    def stage_kexec(self) -> None:
        """Before the freeze: the handoff's snapshot (kexec pending), serialized once, to the
        disk and to token 0 of a new session ``luod``. From now on every change is also kept
        for ``begin_kexec``. The caller syncs. Undone by ``end_kexec``."""
        snapshot = self.manifest()
        snapshot.kexec_pending = True
        raw = manifest_io.serialize(snapshot, self._carried_json)  # the record encoded once
        manifest_io.write_serialized(self._state_dir, raw)
        # the snapshot removed the journal: made again now, not by begin_kexec inside the pause
        with contextlib.suppress(OSError):  # (which then tries again, and says why it fails)
            self._journal_file.open()
        self._journaled, self._snapshot_written = 0, True
        room = HANDOFF_ROOM_BASE + len(raw) + HANDOFF_ROOM_PER_VM * len(self._vms)
        self._state_session.write_snapshot(raw, journal_room=room)
        self._staged, self._staged_snapshot = [], raw

    def begin_kexec(self) -> None:
        """After the last READY: from now on nothing may change. The handoff gets only what
        changed since ``stage_kexec`` (staged now if it was not): journal lines ending with
        the carried record, at token 1 of session ``luod`` and on the disk journal. The
        next kernel's luod starts from that. Undone by ``end_kexec``."""
        if self._staged is None:
            self.stage_kexec()
        assert self._staged is not None
        self._kexec_pending = True
        kexec = manifest_io.kexec_line(self._carried, self._carried_json, self._update_lines)
        self._journal_file.write(kexec)  # the kept fd: no open and close inside the pause
        lines = b"".join([*self._staged, kexec])
        if not self._state_session.write_journal(lines):  # outgrew the room made before
            self._state_session.write_snapshot(self._staged_snapshot)
            self._state_session.write_journal(lines)

    def end_kexec(self) -> None:
        """The kexec did not happen (an abort after ``stage_kexec``, a reboot that failed,
        systemd never ran it): changes are allowed again, and session ``luod`` is closed
        (custody's copy too), so that no later kexec hands over a stale manifest."""
        if self._staged is None and self._state_session.session is None and not self._kexec_pending:
            return
        self._kexec_pending, self._staged, self._staged_snapshot = False, None, b""
        self._state_session.close()
        self.persist()

    def close(self) -> None:
        """Close luod's session fds (custody keeps its copies): tests and tools only."""
        for session in self._sessions.values():
            session.close()
        self._state_session.release()
        self.close_journal()

    def close_journal(self) -> None:
        """Close the journal's kept fd (luod's shutdown); a later change opens it again."""
        self._journal_file.close()

    # --- internals ----------------------------------------------------------------------
    def _open_session(self, vm: VmRecord) -> None:
        try:
            session = self._backend.device.create_session(vm.session)
        except LuoError as exc:
            if exc.errno == errno.EEXIST:  # restore a valid block chain (docs/kernel.md §4.4)
                self._backend.device.create_session(f"luod-eexist-guard-{os.getpid()}").close()
                raise LuodError(
                    "session-exists",
                    f"a LUO session {vm.session!r} already exists",
                    "another process created it; luod will not share it",
                ) from exc
            raise LuodError.from_luo(exc) from exc
        try:
            self._custody.deposit(vm.session, session)
        except BaseException:
            session.close()  # nothing preserved yet: the kernel drops it, the id stays free
            raise
        self._sessions[vm.id] = session

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
        self._limits.check_room_for_files(vm, len(specs))
        for spec in specs:
            if spec.name in vm.files:
                raise LuodError(
                    "file-exists",
                    f"VM {vm.id!r} already has a file {spec.name!r}",
                    "a preserved file cannot be replaced: DROP the VM to start over",
                )

    def _vet(self, vm: VmRecord, spec: FileSpec, fd: OwnedFd) -> memfd.MemfdInfo:
        """Refuse, before anything is preserved, an fd the kernel would refuse for sure."""
        try:
            return vetting.vet(spec, fd)
        except LuodError as exc:
            if exc.code == "luo-enoent":
                vm.rejected[spec.name] = exc.hint
                self.record(vm)
            raise

    def _preserve_one(
        self, vm: VmRecord, spec: FileSpec, fd: OwnedFd, shape: memfd.MemfdInfo
    ) -> FileRecord:
        token = vm.next_token()
        try:
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
        session = self._sessions.pop(vm.id, None)
        if session is not None:
            if finish:
                session.finish()
            session.close()
        self._custody.withdraw(vm.session)
        del self._vms[vm.id]
        self._journal({"forget": vm.id})

    def _refuse_during_kexec(self) -> None:
        if self._kexec_pending:
            raise LuodError("wrong-state", "a kexec is in progress", "retry after the update")


def _default_retriever(backend: Backend) -> Retriever:
    if backend.name == "kernel":
        return retrieve_charged
    return lambda session, tokens, _: [session.retrieve(token) for token in tokens]
