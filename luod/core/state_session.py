"""Session ``luod``: what luod hands itself across a kexec (docs/architecture.md §4). Token 0
holds the handoff's snapshot, written before the freeze; token 1 the journal lines of the freeze,
written after the last READY. This object is the session fd's one owner."""

from __future__ import annotations

from luod.core import manifest as manifest_io
from luod.core.custody_guard import CustodyGuard
from luod.core.model import HANDOFF_JOURNAL_TOKEN, MANIFEST_TOKEN, STATE_SESSION
from luod.kernel import Backend, Session


class StateSession:
    def __init__(self, backend: Backend, custody: CustodyGuard) -> None:
        self._backend = backend
        self._custody = custody
        self._session: Session | None = None

    @property
    def session(self) -> Session | None:
        """The open session (custody holds a copy), or None."""
        return self._session

    def write_snapshot(self, raw: bytes) -> None:
        """A new session with the snapshot ``raw`` at token 0, deposited in custody. A previous
        one (an attempt that was not called off cleanly) is closed first, so the create never
        meets EEXIST."""
        self.close()
        with manifest_io.to_memfd(raw) as fd:
            session = self._backend.device.create_session(STATE_SESSION)
            try:
                session.preserve(fd, MANIFEST_TOKEN)
            except BaseException:
                session.close()
                raise
        self._session = session
        self._custody.deposit(STATE_SESSION, session)

    def write_journal(self, raw: bytes) -> None:
        """The journal lines since the snapshot, at token 1."""
        assert self._session is not None, "write_snapshot first"
        with manifest_io.to_memfd(raw, "luod-journal") as fd:
            self._session.preserve(fd, HANDOFF_JOURNAL_TOKEN)

    def close(self) -> None:
        """Close the session and custody's copy: the kexec is not coming (no stale handoff)."""
        old, self._session = self._session, None
        if old is not None:
            old.close()
            self._custody.withdraw(STATE_SESSION)

    def release(self) -> None:
        """Close luod's fd only; custody keeps its copy (tests and tools, like Registry.close)."""
        if self._session is not None:
            self._session.close()
