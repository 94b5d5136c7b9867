"""Rebuilding luod's state when it starts: from custody, the manifest, and the kernel.

Three cases. After a live update: the manifest comes from token 0 of incoming session ``luod``
(or that session is already in custody, e.g. from systemd's fd store), and every VM session is
taken from custody or retrieved by name. A restart in the same boot: sessions come back from
custody and the disk manifest says what they are. A boot that did not come through a live
update with our sessions: every VM still on record is reported lost — never silently dropped.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import structlog

from luod.core import manifest as manifest_io
from luod.core.custodian import Custody
from luod.core.model import (
    HANDOFF_JOURNAL_TOKEN,
    MANIFEST_TOKEN,
    STATE_SESSION,
    VmRecord,
    VmState,
)
from luod.core.registry import Registry
from luod.errors import LuodError
from luod.kernel import Backend, LuoDevice, LuoError, OpenDevice, Session

log = structlog.get_logger("luod.recovery")


@dataclass
class RecoveryReport:
    mode: str = "fresh"  # fresh | after-kexec | restart | lost-boot
    restored: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unknown_sessions: list[str] = field(default_factory=list)
    retrieved: list[str] = field(default_factory=list)  # by RETRIEVE_SESSION, not from custody


def recover(registry: Registry, backend: Backend, custody: Custody) -> RecoveryReport:
    """Fill the empty ``registry`` from ``custody``, the manifest and ``backend``'s device."""
    report = RecoveryReport()
    if not registry.info.device_present:
        report.mode = "no-device"  # luod still serves: preflight and errors say why
        log.error(
            "no-device",
            release=registry.info.release,
            hint="boot a kernel with CONFIG_LIVEUPDATE and liveupdate=on",
        )
        _resume(registry, {}, report)
        return report
    adopted = _adopt_custody(backend.device, custody)
    try:
        with backend.device.open() as device:
            state: tuple[Session | None, manifest_io.Manifest] | None
            state = _take_state_session(device, custody, adopted, report)
            if state is None and (disk := _kexec_on_disk(registry)) is not None:
                log.warning("state-session-gone", note="the disk manifest of the kexec is used")
                state = (None, disk)
            if state is not None:
                _after_kexec(registry, device, custody, state, adopted, report)
            else:
                _resume(registry, adopted, report)
    except LuoError as exc:
        raise LuodError.from_luo(exc) from exc
    for name, session in adopted.items():  # ours is a duplicate: custody keeps its copy
        report.unknown_sessions.append(name)
        session.close()
    log.info("recovered", **report.__dict__)
    return report


def _adopt_custody(device: LuoDevice, custody: Custody) -> dict[str, Session]:
    adopted = {}
    for name, fd in custody.recover().items():
        try:
            session = device.adopt_session(fd)
        except LuoError as exc:
            log.warning("custody-not-a-session", name=name, error=str(exc))
            fd.close()
            continue
        adopted[session.known_name] = session
    return adopted


def _take_state_session(
    device: OpenDevice, custody: Custody, adopted: dict[str, Session], report: RecoveryReport
) -> tuple[Session, manifest_io.Manifest] | None:
    session = adopted.pop(STATE_SESSION, None)
    if session is None:
        try:
            session = device.retrieve_session(STATE_SESSION)
        except LuoError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        custody.deposit(STATE_SESSION, session)  # first: its last close would FINISH it
        report.retrieved.append(STATE_SESSION)
    try:
        with session.retrieve(MANIFEST_TOKEN) as fd:
            manifest = manifest_io.from_fd(fd)
    except LuoError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: an outgoing leftover of a kexec that failed
            raise
        session.close()
        custody.withdraw(STATE_SESSION)
        return None
    custody.deposit(STATE_SESSION, session)  # until every VM session is safe
    return session, _with_handoff_journal(session, manifest)


def _with_handoff_journal(session: Session, manifest: manifest_io.Manifest) -> manifest_io.Manifest:
    """The changes written after the last READY (luod.core.manifest). None from a luod that
    wrote only token 0; only zeros from a kexec that came before that luod's last READY (the
    memfd is preserved with the snapshot and written after it: luod.core.state_session)."""
    try:
        with session.retrieve(HANDOFF_JOURNAL_TOKEN) as fd:
            lines = manifest_io.read_fd(fd).rstrip(b"\0")  # the room left after them
            return manifest_io.replay(manifest, lines)
    except LuoError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return manifest


def _kexec_on_disk(registry: Registry) -> manifest_io.Manifest | None:
    """The disk manifest a luod wrote just before a kexec, when this boot came through
    that kexec but session ``luod`` is gone (a luod killed after retrieving it, before its
    custody had it): the VM sessions are still there, by name."""
    disk = manifest_io.read_disk(registry.state_dir)
    info = registry.info
    if disk is None or not disk.kexec_pending or disk.boot_id == info.boot_id:
        return None
    return disk if info.liveupdate_number > disk.liveupdate_number else None


def _after_kexec(
    registry: Registry,
    device: OpenDevice,
    custody: Custody,
    state: tuple[Session | None, manifest_io.Manifest],
    adopted: dict[str, Session],
    report: RecoveryReport,
) -> None:
    state_session, manifest = state
    report.mode = "after-kexec"
    sessions = {}
    for vm in manifest.vms.values():
        session = adopted.pop(vm.session, None) or _retrieve(device, vm, report)
        if session is None:
            report.lost.append(vm.id)
            continue
        sessions[vm.id] = session
        custody.deposit(vm.session, session)
        for record in vm.files.values():
            record.reclaimed = False
        vm.touch(VmState.INCOMING, note=f"preserved by {manifest.release}")
        report.restored.append(vm.id)
    registry.restore(manifest.vms, sessions, previous=manifest)
    if state_session is not None:
        state_session.finish()  # every file of it (the manifest) was retrieved
        state_session.close()
    custody.withdraw(STATE_SESSION)


def _retrieve(device: OpenDevice, vm: VmRecord, report: RecoveryReport) -> Session | None:
    """By name: after a direct kexec. Under systemd (``systemctl kexec``) PID 1 has retrieved
    the session already and hands it over in ``LISTEN_FDS``; this would get EINVAL."""
    report.retrieved.append(vm.session)
    try:
        return device.retrieve_session(vm.session)
    except LuoError as exc:
        vm.touch(VmState.LOST, note=f"session {vm.session!r} not retrievable: {exc}")
        log.error("vm-lost", vm=vm.id, error=str(exc))
        return None


def _resume(registry: Registry, adopted: dict[str, Session], report: RecoveryReport) -> None:
    disk = manifest_io.read_disk(registry.state_dir)
    if disk is None:
        return
    vms = dict(disk.vms)
    if disk.boot_id != registry.info.boot_id:
        report.mode = "lost-boot"
        for vm in vms.values():
            if vm.state is not VmState.LOST:
                vm.touch(VmState.LOST, note="this boot did not come through a live update")
                report.lost.append(vm.id)
        registry.restore(vms, {})
        return
    report.mode = "restart"
    sessions = {}
    for vm in vms.values():
        session = adopted.pop(vm.session, None)
        if session is None and vm.state is not VmState.LOST:
            vm.touch(VmState.LOST, note="its session was not in custody after a restart")
            report.lost.append(vm.id)
        elif session is not None:
            sessions[vm.id] = session
            report.restored.append(vm.id)
    registry.restore(vms, sessions)
