from __future__ import annotations

import os

import pytest

from luod.kernel import OwnedFd


def test_close_twice_is_safe_and_marks_closed() -> None:
    fd = OwnedFd(os.open("/dev/null", os.O_RDONLY))
    fd.close()
    fd.close()
    assert fd.closed
    with pytest.raises(ValueError):
        fd.fileno()


def test_detach_hands_the_number_over() -> None:
    fd = OwnedFd(os.open("/dev/null", os.O_RDONLY))
    number = fd.detach()
    assert fd.closed
    os.fstat(number)
    os.close(number)


def test_dup_is_a_separate_owner_of_the_same_file() -> None:
    with OwnedFd(os.open("/dev/null", os.O_RDONLY)) as fd, fd.dup() as twin:
        assert twin.fileno() != fd.fileno()
        assert os.fstat(twin.fileno()).st_ino == os.fstat(fd.fileno()).st_ino


def test_negative_fd_is_refused() -> None:
    with pytest.raises(ValueError):
        OwnedFd(-1)
