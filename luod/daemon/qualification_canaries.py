"""The canaries' I/O: create, fill, seal and preserve them before a kexec; retrieve, measure and
finish them after it (the plan and the verdicts are luod.core.qualify's).

Canary sessions are held by luod and deposited in custody like VM sessions (a luod that dies
loses none), under their own names (``luodq.*``), never in the registry: no VMM sees them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os

from luod.core import qualify
from luod.core.custodian import Custody
from luod.kernel import Backend, LuoError, OwnedFd, Session, memfd


class Canaries:
    """The canary sessions luod holds in this boot."""

    def __init__(self, backend: Backend, custody: Custody) -> None:
        self.backend = backend
        self.custody = custody
        self._held: dict[str, Session] = {}

    @property
    def held(self) -> list[str]:
        return sorted(self._held)

    # --- before the kexec ----------------------------------------------------------------------
    def preserve(self, plan: list[qualify.CanarySession]) -> None:
        """Every session of ``plan`` created, its files filled and preserved, then the writes
        after preserve. On failure every canary made so far is dropped, then it raises."""
        try:
            for canary in plan:
                self._preserve_session(canary)
        except BaseException:
            self.drop()
            raise

    def _preserve_session(self, canary: qualify.CanarySession) -> None:
        try:
            session = self.backend.device.create_session(canary.name)
        except LuoError as exc:
            if exc.errno == errno.EEXIST:  # repair the block chain (docs/kernel.md §4.4)
                self.backend.device.create_session(f"luodq-eexist-guard-{os.getpid()}").close()
            raise
        self._held[canary.name] = session
        self.custody.deposit(canary.name, session)
        for file in canary.files:
            with _filled(file) as fd:
                session.preserve(fd, file.token)
                for offset, data in qualify.blocks_after(file):
                    os.pwrite(fd.fileno(), data, offset)

    def drop(self) -> None:
        """Close every canary session (outgoing: unpreserved) and forget custody's copies."""
        for name, session in self._held.items():
            session.close()
            self.custody.withdraw(name)
        self._held.clear()

    # --- after the kexec -----------------------------------------------------------------------
    def verify(self, plan: list[qualify.CanarySession]) -> list[qualify.Check]:
        """Retrieve every canary, judge it, then finish and close its session."""
        held = self._in_custody({canary.name for canary in plan})
        checks = []
        for canary in plan:
            checks.extend(self._verify_session(canary, held.pop(canary.name, None)))
        return checks

    def _verify_session(
        self, canary: qualify.CanarySession, held: OwnedFd | None
    ) -> list[qualify.Check]:
        try:
            session = self._incoming(canary.name, held)
        except LuoError as exc:
            return [qualify.check(f"{canary.name}: retrieved", "yes", f"no: {exc}")]
        checks = [qualify.check(f"{canary.name}: retrieved", "yes", "yes")]
        try:
            for file in canary.files:
                checks.extend(_verify_file(session, canary.name, file))
            session.finish()
            checks.append(qualify.check(f"{canary.name}: finished", "yes", "yes"))
        except LuoError as exc:
            checks.append(qualify.check(f"{canary.name}: finished", "yes", f"no: {exc}"))
        finally:
            session.close()
            self.custody.withdraw(canary.name)
        return checks

    def _in_custody(self, names: set[str]) -> dict[str, OwnedFd]:
        """The fds custody holds under ``names`` (systemd's fd store hands them back), from one
        recover() for the whole plan: it duplicates every VM's session too, closed here."""
        found = {}
        for held, fd in self.custody.recover().items():
            if held in names:
                found[held] = fd
            else:
                fd.close()
        return found

    def _incoming(self, name: str, held: OwnedFd | None) -> Session:
        """Custody's fd adopted, else the session retrieved by name."""
        if held is not None:
            return self.backend.device.adopt_session(held)
        return self.backend.device.retrieve_session(name)


def _filled(file: qualify.CanaryFile) -> OwnedFd:
    flags = memfd.MFD_ALLOW_SEALING | (memfd.MFD_NOEXEC_SEAL if file.noexec else 0)
    fd = memfd.create(f"luodq-{file.label}", file.size, flags=flags)
    try:
        for offset, data in qualify.blocks_before(file):
            os.pwrite(fd.fileno(), data, offset)
        if file.seals:
            memfd.add_seals(fd, file.seals)
    except BaseException:
        fd.close()
        raise
    return fd


def _verify_file(session: Session, name: str, file: qualify.CanaryFile) -> list[qualify.Check]:
    try:
        fd = session.retrieve(file.token)
    except LuoError as exc:
        return [qualify.check(f"{name}/{file.label}: retrieved", "yes", f"no: {exc}")]
    with fd:
        return qualify.verify_file(name, file, observe(fd, file))


def observe(fd: OwnedFd, file: qualify.CanaryFile) -> qualify.Observed:
    """Size, seals, sha256 of every byte, and which holes did not read as zeros."""
    size = os.fstat(fd.fileno()).st_size
    digest = hashlib.sha256()
    holes = qualify.zero_holes(file)
    nonzero = []
    for index in range(-(-size // qualify.BLOCK)):
        data = _pread(fd, index * qualify.BLOCK)
        digest.update(data)
        if index in holes and data.count(0) != len(data):
            nonzero.append(index)
    return qualify.Observed(size, memfd.get_seals(fd), digest.hexdigest(), tuple(nonzero))


def _pread(fd: OwnedFd, offset: int) -> bytes:
    while True:
        with contextlib.suppress(InterruptedError):
            return os.pread(fd.fileno(), qualify.BLOCK, offset)
