"""Custody contract (one behaviour per test), run on MemoryCustody and on SystemdFdStore over a
fake fd store built on a real notify socket; tests/integration/test_keeper.py runs the same
contract on KeeperCustody.

"Custody's copy was closed" is observed, not assumed: the fd deposited is the write end of a
pipe, and the read end sees EOF only once every copy of it is closed.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from luod.core.custodian import Custody
from luod.custody import sdnotify
from luod.custody.choose import choose_custody
from luod.custody.fdname import check_name, name_problem
from luod.custody.fdstore import SystemdFdStore
from luod.custody.memory import MemoryCustody
from luod.errors import LuodError
from luod.fdpass import unpack_rights
from luod.kernel.fd import OwnedFd
from tests.fds import fd_table

Settle = Callable[[], None]


@pytest.fixture(autouse=True)
def fd_guard() -> Iterator[None]:
    before = fd_table()
    yield
    leaked = {fd: target for fd, target in fd_table().items() if fd not in before}
    assert not leaked, f"fds leaked by the test: {leaked}"


def memfd(content: bytes) -> OwnedFd:
    fd = OwnedFd(os.memfd_create("custody-test", os.MFD_CLOEXEC))
    os.write(fd.fileno(), content)
    return fd


def identity(fd: OwnedFd) -> tuple[int, int]:
    info = os.fstat(fd.fileno())
    return info.st_dev, info.st_ino


def pipe() -> tuple[OwnedFd, OwnedFd]:
    reader, writer = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    return OwnedFd(reader), OwnedFd(writer)


def writers_gone(reader: OwnedFd) -> bool:
    """EOF on the read end: every copy of the write end, anywhere, is closed."""
    try:
        return os.read(reader.fileno(), 1) == b""
    except BlockingIOError:
        return False


def close_all(fds: dict[str, OwnedFd]) -> None:
    for fd in fds.values():
        fd.close()


class FakeFdStore:
    """systemd's side of $NOTIFY_SOCKET on real fds, served by a thread as PID 1 would:
    FDSTORE=1, FDSTOREREMOVE=1 and BARRIER=1 (so ``settle()`` waits like sd_notify_barrier)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(address)
        self.messages: list[str] = []
        self.stored: list[tuple[str, OwnedFd]] = []
        self.most_of_one_name = 0  # the most fds stored under one name at any moment
        self._stop_reader, self._stop_writer = pipe()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def settle(self) -> None:
        """Return once every message sent so far has been applied."""
        assert sdnotify.notify_barrier(timeout=5)

    def names(self) -> list[str]:
        return [name for name, _fd in self.stored]

    def close(self) -> None:
        os.write(self._stop_writer.fileno(), b"x")
        self._thread.join()
        for _name, fd in self.stored:
            fd.close()
        for each in (self.sock, self._stop_reader, self._stop_writer):
            each.close()

    def _serve(self) -> None:
        while True:
            stop = self._stop_reader.fileno()
            ready, _, _ = select.select([self.sock.fileno(), stop], [], [])
            if stop in ready:
                return
            data, anc, flags, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(64), 0)
            fds = [OwnedFd(number) for number in unpack_rights(anc)]
            assert not flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC)
            self._apply(data.decode(), fds)

    def _apply(self, text: str, fds: list[OwnedFd]) -> None:
        self.messages.append(text)
        fields = dict(line.split("=", 1) for line in text.split("\n"))
        if fields.get("FDSTORE") == "1":
            name = fields.get("FDNAME", "stored")
            self.stored.extend((name, fd) for fd in fds)
            alike = sum(1 for held, _fd in self.stored if held == name)
            self.most_of_one_name = max(self.most_of_one_name, alike)
            return
        if fields.get("FDSTOREREMOVE") == "1":
            for entry in [entry for entry in self.stored if entry[0] == fields["FDNAME"]]:
                self.stored.remove(entry)
                entry[1].close()
        for fd in fds:  # BARRIER=1: closing the pipe end is the answer
            fd.close()


@pytest.fixture
def fake_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFdStore]:
    store = FakeFdStore(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("FDSTORE", "4096")
    yield store
    store.close()


class CustodyContract:
    """What every custody kind promises. Subclasses provide ``custody`` and ``settle``."""

    def test_deposit_leaves_the_callers_fd_open(self, custody: Custody) -> None:
        with memfd(b"ram") as fd:
            custody.deposit("luod.vm1", fd)
            assert os.pread(fd.fileno(), 3, 0) == b"ram"

    def test_recover_gives_the_same_file_as_new_fds(self, custody: Custody) -> None:
        with memfd(b"guest ram") as fd:
            custody.deposit("luod.vm1", fd)
            want = identity(fd)
        first, second = custody.recover(), custody.recover()
        try:
            assert identity(first["luod.vm1"]) == identity(second["luod.vm1"]) == want
            assert first["luod.vm1"].fileno() != second["luod.vm1"].fileno()
            assert os.pread(first["luod.vm1"].fileno(), 9, 0) == b"guest ram"
        finally:
            close_all(first)
            close_all(second)

    def test_deposit_again_replaces_and_closes_the_old_copy(
        self, custody: Custody, settle: Settle
    ) -> None:
        reader, writer = pipe()
        with reader, memfd(b"new") as new:
            with writer:
                custody.deposit("luod.vm1", writer)
            custody.deposit("luod.vm1", new)
            settle()
            assert writers_gone(reader)
            recovered = custody.recover()
            assert {name: identity(fd) for name, fd in recovered.items()} == {
                "luod.vm1": identity(new)
            }
            close_all(recovered)

    def test_withdraw_closes_custodys_copy(self, custody: Custody, settle: Settle) -> None:
        reader, writer = pipe()
        with reader:
            with writer:
                custody.deposit("luod.vm1", writer)
            settle()
            assert not writers_gone(reader)
            custody.withdraw("luod.vm1")
            settle()
            assert writers_gone(reader)
            assert custody.recover() == {}

    def test_withdraw_of_an_unknown_name_is_a_no_op(self, custody: Custody) -> None:
        custody.withdraw("luod.never-deposited")
        assert custody.recover() == {}

    @pytest.mark.parametrize("name", ["", "luod:vm1", "luod.vm\n1", "luod.\x7f", "é", "x" * 256])
    def test_names_systemd_would_refuse_are_refused_first(
        self, custody: Custody, name: str
    ) -> None:
        with memfd(b"") as fd, pytest.raises(ValueError, match="invalid custody fd name"):
            custody.deposit(name, fd)
        assert custody.recover() == {}

    def test_recover_returns_every_entry_by_name(self, custody: Custody) -> None:
        names = [f"luod.vm{i}" for i in range(300)]  # more than one keeper LIST message
        for name in names:
            with memfd(name.encode()) as fd:
                custody.deposit(name, fd)
        recovered = custody.recover()
        try:
            assert sorted(recovered) == sorted(names)
            assert all(os.pread(fd.fileno(), 20, 0) == n.encode() for n, fd in recovered.items())
        finally:
            close_all(recovered)

    def test_closed_custody_says_so(self, custody: Custody) -> None:
        custody.close()
        custody.close()
        with memfd(b"") as fd, pytest.raises(LuodError) as caught:
            custody.deposit("luod.vm1", fd)
        assert caught.value.code == "custody-closed"

    def test_threads_may_deposit_withdraw_and_recover_at_once(
        self, custody: Custody, settle: Settle
    ) -> None:
        """Custody is called from worker threads too (a qualification's canaries are preserved
        and verified in one while the event loop deposits and withdraws VMs): seen in CI as
        "dictionary changed size during iteration". After the storm, custody holds exactly
        what the last calls left, once each."""
        reader, writer = pipe()
        errors: list[BaseException] = []

        def storm(first: int) -> None:
            try:
                for n in range(first, first + 600):
                    custody.deposit(f"luod.vm{n % 8}", writer)
                    custody.withdraw(f"luod.vm{(n * 7) % 8}")
                    close_all(custody.recover())
            except BaseException as exc:  # what a race raises is the finding
                errors.append(exc)

        threads = [threading.Thread(target=storm, args=(k * 600,)) for k in range(3)]
        with reader:
            with writer:
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            assert errors == []
            for n in range(8):
                custody.deposit(f"luod.vm{n}", reader)
            held = custody.recover()
            assert sorted(held) == [f"luod.vm{n}" for n in range(8)]
            close_all(held)
            for n in range(8):
                custody.withdraw(f"luod.vm{n}")
            settle()
            assert custody.recover() == {}


class TestMemoryCustody(CustodyContract):
    @pytest.fixture
    def custody(self) -> Iterator[Custody]:
        custody = MemoryCustody()
        yield custody
        custody.close()

    @pytest.fixture
    def settle(self) -> Settle:
        return lambda: None


class TestSystemdFdStoreContract(CustodyContract):
    @pytest.fixture
    def custody(self, fake_store: FakeFdStore) -> Iterator[Custody]:
        custody = SystemdFdStore()
        yield custody
        custody.close()

    @pytest.fixture
    def settle(self, fake_store: FakeFdStore) -> Settle:
        return fake_store.settle


def test_fd_names_follow_systemds_fdname_rule() -> None:
    assert check_name("luod.vm-1_a") == "luod.vm-1_a"
    assert check_name("x" * 255) == "x" * 255
    assert name_problem("luod:vm") == "the name contains ':' (the $LISTEN_FDNAMES separator)"
    assert name_problem("") == "the name is empty"


def test_choose_custody_gives_memory_only_when_asked(tmp_path: Path) -> None:
    custody = choose_custody(tmp_path, "memory")
    assert custody.kind == "memory"
    custody.close()


def test_choose_custody_refuses_an_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown custody 'disk'"):
        choose_custody(tmp_path, "disk")


def test_choose_custody_takes_systemd_when_it_has_a_store(
    fake_store: FakeFdStore, tmp_path: Path
) -> None:
    custody = choose_custody(tmp_path)
    assert custody.kind == "systemd"
    custody.close()


def test_fd_store_keeps_one_entry_a_name_when_threads_deposit_it_at_once(
    fake_store: FakeFdStore,
) -> None:
    """systemd files a second fd of the same name beside the first, so a deposit of a held name
    removes, then stores: two threads doing that at once must not both store."""
    custody = SystemdFdStore()
    reader, writer = pipe()
    errors: list[BaseException] = []

    def deposit_again() -> None:
        try:
            for n in range(400):
                custody.deposit(f"luod.vm{n % 4}", writer)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deposit_again) for _ in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: the race shows in every run
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(interval)
        fake_store.settle()
        assert errors == []
        assert fake_store.names() and fake_store.most_of_one_name == 1
    finally:
        sys.setswitchinterval(interval)
        custody.close()
        reader.close()
        writer.close()
