"""CREATE_SESSION, GET_NAME and session lifetime (docs/kernel.md §4.3, §4.9, §5.1)."""

from __future__ import annotations

import errno
import fcntl

import pytest

from luod.kernel import LuoError
from tests.contract.harness import Luo


def test_create_duplicate_session_is_eexist(luo: Luo) -> None:
    luo.create("dup")
    with pytest.raises(LuoError) as info:
        luo.create("dup")
    assert info.value.errno == errno.EEXIST


def test_create_distinct_sessions(luo: Luo) -> None:
    first, second = luo.create("one"), luo.create("two")
    assert first.fileno() != second.fileno()


def test_session_fd_is_close_on_exec(luo: Luo) -> None:
    session = luo.create("cloexec")
    assert fcntl.fcntl(session.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_get_session_name(luo: Luo) -> None:
    assert luo.create("named").name == "named"


def test_get_session_name_max_length(luo: Luo) -> None:
    name = "n" * 63
    assert luo.create(name).name == name


def test_name_of_64_bytes_is_rejected_before_the_syscall(luo: Luo) -> None:
    with pytest.raises(LuoError) as info:
        luo.create("n" * 64)
    assert info.value.errno == errno.EINVAL


def test_name_with_a_nul_inside_is_rejected(luo: Luo) -> None:
    with pytest.raises(LuoError) as info:
        luo.create("ab\0cd")
    assert info.value.errno == errno.EINVAL


def test_closed_session_name_can_be_created_again(luo: Luo) -> None:
    luo.create("again").close()
    assert luo.create("again").name == "again"


def test_retrieve_fd_on_outgoing_session_is_einval(luo: Luo) -> None:
    with pytest.raises(LuoError) as info:
        luo.create("out").retrieve(1)
    assert info.value.errno == errno.EINVAL


def test_finish_on_outgoing_session_is_einval(luo: Luo) -> None:
    with pytest.raises(LuoError) as info:
        luo.create("out").finish()
    assert info.value.errno == errno.EINVAL


def test_preserve_many_sessions(luo: Luo) -> None:
    sessions = [luo.create(f"many-test-{i}") for i in range(2000)]
    assert sessions[1999].name == "many-test-1999"
    for session in sessions:
        session.close()


def test_adopt_accepts_a_session_fd(luo: Luo) -> None:
    session = luo.create("adopt-me")
    adopted = luo.own(luo.device.adopt_session(session.detach()))
    assert adopted.known_name == "adopt-me"


def test_adopt_refuses_a_memfd_and_leaves_it_open(luo: Luo) -> None:
    fd = luo.memfd(b"not a session")
    with pytest.raises(LuoError) as info:
        luo.device.adopt_session(fd)
    assert info.value.errno in (errno.ENOTTY, errno.EINVAL)
    assert not fd.closed


def test_closed_session_object_refuses_calls(luo: Luo) -> None:
    session = luo.create("closing")
    session.close()
    session.close()
    with pytest.raises(LuoError) as info:
        session.preserve(luo.memfd(b"x"), 1)
    assert info.value.errno == errno.EBADF
