"""Session ``luod``: what luod hands itself across a kexec (docs/architecture.md §4). Token 0
holds the handoff's snapshot, written before the freeze; token 1 the journal lines of the freeze,
written after the last READY. This object is the session fd's one owner, and the journal
memfd's.

Token 1's memfd is made and preserved with the snapshot, before the freeze, zero-filled and
larger than its lines should need: after the last READY its lines are one ``pwrite`` into it.
The kernel carries a preserved memfd's contents as they are at the kexec, writes after
PRESERVE_FD included (docs/kernel.md §6.2), so the memfd's creation, its pages and the
PRESERVE_FD ioctl (0.9-2.7 ms of every VM's pause in a TCG guest) leave the pause. The reader
drops the zeros after the last line (luod.core.recovery). Lines that do not fit go the old way:
a new session, with the snapshot again and a memfd of their size (``write_journal`` says so)."""

from __future__ import annotations

import os

from luod.core import manifest as manifest_io
from luod.core.custody_guard import CustodyGuard
from luod.core.model import HANDOFF_JOURNAL_TOKEN, MANIFEST_TOKEN, STATE_SESSION
from luod.kernel import Backend, OwnedFd, Session


class StateSession:
    def __init__(self, backend: Backend, custody: CustodyGuard) -> None:
        self._backend = backend
        self._custody = custody
        self._session: Session | None = None
        self._journal: OwnedFd | None = None  # token 1, preserved before the freeze
        self._room = 0  # its size

    @property
    def session(self) -> Session | None:
        """The open session (custody holds a copy), or None."""
        return self._session

    def write_snapshot(self, raw: bytes, journal_room: int = 0) -> None:
        """A new session with the snapshot ``raw`` at token 0, deposited in custody, and
        ``journal_room`` zeroed bytes preserved at token 1 for ``write_journal`` (0: none). A
        previous session (an attempt that was not called off cleanly) is closed first, so the
        create never meets EEXIST."""
        self.close()
        with manifest_io.to_memfd(raw) as fd:
            session = self._backend.device.create_session(STATE_SESSION)
            try:
                session.preserve(fd, MANIFEST_TOKEN)
                if journal_room:
                    self._journal = self._reserve(session, journal_room)
                    self._room = journal_room
            except BaseException:
                session.close()
                raise
        self._session = session
        self._custody.deposit(STATE_SESSION, session)

    @staticmethod
    def _reserve(session: Session, room: int) -> OwnedFd:
        fd = manifest_io.zeroed_memfd(room, "luod-journal")
        try:
            session.preserve(fd, HANDOFF_JOURNAL_TOKEN)
        except BaseException:
            fd.close()
            raise
        return fd

    def write_journal(self, raw: bytes) -> bool:
        """The journal lines since the snapshot, at token 1: into the memfd preserved there
        with the snapshot, or a new one where none was. False, with nothing written, when they
        do not fit the preserved one."""
        assert self._session is not None, "write_snapshot first"
        if self._journal is None:
            with manifest_io.to_memfd(raw, "luod-journal") as fd:
                self._session.preserve(fd, HANDOFF_JOURNAL_TOKEN)
            return True
        if len(raw) > self._room:
            return False
        os.pwrite(self._journal.fileno(), raw, 0)
        return True

    def close(self) -> None:
        """Close the session and custody's copy: the kexec is not coming (no stale handoff)."""
        old, self._session = self._session, None
        self._close_journal()
        if old is not None:
            old.close()
            self._custody.withdraw(STATE_SESSION)

    def release(self) -> None:
        """Close luod's fd only; custody keeps its copy (tests and tools, like Registry.close)."""
        self._close_journal()
        if self._session is not None:
            self._session.close()

    def _close_journal(self) -> None:
        journal, self._journal, self._room = self._journal, None, 0
        if journal is not None:
            journal.close()
