"""PRESERVE_FD before any kexec (docs/kernel.md §4.6, §6.1; selftests preserve_*)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from luod.kernel import LuoError, OwnedFd, libc, memfd
from tests.contract.harness import Luo, read_all

TMPFS_CANDIDATES = ("/dev/shm", "/tmp", "/run")


@pytest.fixture
def tmpfs_dir() -> Path:
    for candidate in TMPFS_CANDIDATES:
        try:
            fd = OwnedFd(os.open(candidate, os.O_RDONLY | os.O_DIRECTORY))
        except OSError:
            continue
        with fd:
            if libc.fstatfs_type(fd.fileno()) == memfd.TMPFS_MAGIC:
                return Path(candidate)
    pytest.fail(f"no tmpfs among {TMPFS_CANDIDATES}")


def expect_errno(code: int, call: Callable[[], object]) -> None:
    with pytest.raises(LuoError) as info:
        call()
    assert info.value.errno == code, str(info.value)


def test_preserve_memfd_then_close_session_keeps_memfd_data(luo: Luo) -> None:
    session = luo.create("preserve-memfd")
    fd = luo.memfd(b"hello preserved world")
    session.preserve(fd, 0x1A)
    session.close()
    assert read_all(fd) == b"hello preserved world"


def test_preserve_multiple_memfds(luo: Luo) -> None:
    session = luo.create("multi")
    first, second = luo.memfd(b"first"), luo.memfd(b"second")
    session.preserve(first, 0xAAAA)
    session.preserve(second, 0xBBBB)
    assert (read_all(first), read_all(second)) == (b"first", b"second")


def test_preserve_complex_scenario(luo: Luo) -> None:
    for index in range(2):
        session = luo.create(f"complex-{index}")
        session.preserve(luo.memfd(f"data {index}".encode()), 0x100 + index)
        session.preserve(luo.memfd(b""), 0x200 + index)


def test_memfd_may_be_closed_right_after_preserve(luo: Luo) -> None:
    session = luo.create("close-after")
    fd = luo.memfd(b"x")
    session.preserve(fd, 1)
    fd.close()


def test_token_zero_and_u64_max_are_valid(luo: Luo) -> None:
    session = luo.create("tokens")
    session.preserve(luo.memfd(b"a"), 0)
    session.preserve(luo.memfd(b"b"), 2**64 - 1)


def test_token_outside_u64_is_rejected_before_the_syscall(luo: Luo) -> None:
    session = luo.create("bad-token")
    expect_errno(errno.EINVAL, lambda: session.preserve(luo.memfd(b"a"), 2**64))
    expect_errno(errno.EINVAL, lambda: session.preserve(luo.memfd(b"a"), -1))


def test_same_token_in_same_session_is_eexist(luo: Luo) -> None:
    session = luo.create("token-dup")
    session.preserve(luo.memfd(b"a"), 7)
    expect_errno(errno.EEXIST, lambda: session.preserve(luo.memfd(b"b"), 7))


def test_same_token_in_another_session_is_fine(luo: Luo) -> None:
    luo.create("token-a").preserve(luo.memfd(b"a"), 7)
    luo.create("token-b").preserve(luo.memfd(b"b"), 7)


def test_same_memfd_in_another_session_is_ebusy(luo: Luo) -> None:
    fd = luo.memfd(b"a")
    luo.create("double-a").preserve(fd, 1)
    expect_errno(errno.EBUSY, lambda: luo.create("double-b").preserve(fd, 1))


def test_same_memfd_same_session_new_token_is_ebusy(luo: Luo) -> None:
    fd, session = luo.memfd(b"a"), luo.create("double")
    session.preserve(fd, 1)
    expect_errno(errno.EBUSY, lambda: session.preserve(fd, 2))


def test_dup_of_preserved_memfd_is_ebusy(luo: Luo) -> None:
    fd, session = luo.memfd(b"a"), luo.create("double-dup")
    session.preserve(fd, 1)
    twin = luo.own(fd.dup())
    expect_errno(errno.EBUSY, lambda: session.preserve(twin, 2))


def test_reopen_through_proc_of_preserved_memfd_is_ebusy(luo: Luo) -> None:
    fd, session = luo.memfd(b"a"), luo.create("double-proc")
    session.preserve(fd, 1)
    reopened = luo.own(OwnedFd(os.open(f"/proc/self/fd/{fd.fileno()}", os.O_RDWR)))
    expect_errno(errno.EBUSY, lambda: session.preserve(reopened, 2))


def test_read_only_fd_of_memfd_can_be_preserved(luo: Luo) -> None:
    fd = luo.memfd(b"ro")
    read_only = luo.own(OwnedFd(os.open(f"/proc/self/fd/{fd.fileno()}", os.O_RDONLY)))
    luo.create("read-only").preserve(read_only, 1)


def test_closing_the_session_lets_the_memfd_be_preserved_again(luo: Luo) -> None:
    fd = luo.memfd(b"again")
    first = luo.create("first-owner")
    first.preserve(fd, 1)
    first.close()
    luo.create("second-owner").preserve(fd, 1)


def test_preserve_closed_fd_is_ebadf(luo: Luo) -> None:
    fd = OwnedFd(os.dup(0))
    number = fd.fileno()
    fd.close()
    session = luo.create("closed-fd")
    expect_errno(errno.EBADF, lambda: session.preserve(_Number(number), 1))


def test_preserve_an_o_path_fd_is_ebadf(luo: Luo) -> None:
    """``fget`` skips O_PATH files: the kernel sees no file at all (luod refuses it first,
    as ``bad-fd``: issue 13, finding 10)."""
    fd = luo.own(memfd.create("o-path", 4096))
    path_only = luo.own(OwnedFd(os.open(f"/proc/self/fd/{fd.fileno()}", os.O_PATH | os.O_CLOEXEC)))
    session = luo.create("o-path-fd")
    expect_errno(errno.EBADF, lambda: session.preserve(path_only, 1))


def test_preserve_negative_fd_is_rejected_before_the_syscall(luo: Luo) -> None:
    session = luo.create("negative-fd")
    expect_errno(errno.EBADF, lambda: session.preserve(_Number(-1), 1))


class _Number:
    def __init__(self, number: int) -> None:
        self.number = number

    def fileno(self) -> int:
        return self.number


def _pipe(luo: Luo, _: Path) -> OwnedFd:
    reader, writer = os.pipe()
    luo.own(OwnedFd(writer))
    return luo.own(OwnedFd(reader))


def _socket(luo: Luo, _: Path) -> OwnedFd:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    return luo.own(OwnedFd(sock.detach()))


def _eventfd(luo: Luo, _: Path) -> OwnedFd:
    return luo.own(OwnedFd(os.eventfd(0, os.EFD_CLOEXEC)))


def _dev_null(luo: Luo, _: Path) -> OwnedFd:
    return luo.own(OwnedFd(os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)))


def _linked_tmpfs_file(luo: Luo, tmpfs: Path) -> OwnedFd:
    path = tmpfs / f"luod-linked-{os.getpid()}"
    fd = luo.own(OwnedFd(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)))
    luo.own(_Unlinker(path))
    return fd


def _hugetlb_memfd(luo: Luo, _: Path) -> OwnedFd:
    flags = memfd.MFD_HUGETLB | memfd.MFD_CLOEXEC
    return luo.own(OwnedFd(os.memfd_create("huge", flags)))


def _session_fd(luo: Luo, _: Path) -> OwnedFd:
    return luo.own(luo.create("as-file").detach())


class _Unlinker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


UNSUPPORTED = {
    "pipe": _pipe,
    "socket": _socket,
    "eventfd": _eventfd,
    "dev_null": _dev_null,
    "linked_tmpfs_file": _linked_tmpfs_file,
    "hugetlb_memfd": _hugetlb_memfd,
    "session_fd": _session_fd,
}


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
def test_preserve_unsupported_fd_is_enoent(luo: Luo, kind: str, tmpfs_dir: Path) -> None:
    fd = UNSUPPORTED[kind](luo, tmpfs_dir)
    session = luo.create(f"unsupported-{kind}")
    expect_errno(errno.ENOENT, lambda: session.preserve(fd, 1))


def test_preserve_the_device_fd_is_enoent(luo: Luo) -> None:
    session = luo.create("device-as-file")
    with luo.opened() as device:
        expect_errno(errno.ENOENT, lambda: session.preserve(device, 1))


def test_preserve_o_tmpfile_on_tmpfs(luo: Luo, tmpfs_dir: Path) -> None:
    flags = os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC
    fd = luo.own(OwnedFd(os.open(tmpfs_dir, flags, 0o600)))
    luo.create("tmpfile").preserve(fd, 1)


def test_preserve_unlinked_tmpfs_file(luo: Luo, tmpfs_dir: Path) -> None:
    path = tmpfs_dir / f"luod-unlinked-{os.getpid()}"
    fd = luo.own(OwnedFd(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)))
    path.unlink()
    luo.create("unlinked").preserve(fd, 1)


def test_preserve_many_files(luo: Luo) -> None:
    session = luo.create("many-files")
    for token in range(500):
        fd = memfd.create("f", 4096)
        try:
            session.preserve(fd, token)
        finally:
            fd.close()


def test_memfd_inspection_flags_hugetlb_and_exec_seal(luo: Luo) -> None:
    huge = _hugetlb_memfd(luo, Path("/"))
    sealed = luo.own(memfd.create("noexec", flags=memfd.MFD_NOEXEC_SEAL))
    assert memfd.inspect(huge).hugetlb and not memfd.inspect(huge).preservable
    assert memfd.inspect(sealed).exec_sealed and memfd.inspect(sealed).preservable
