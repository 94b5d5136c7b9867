from __future__ import annotations

import errno
import pickle

import pytest

from luod.kernel import LuoError
from luod.kernel.errors import hint_for


@pytest.mark.parametrize(
    ("op", "code", "words"),
    [
        ("PRESERVE_FD", errno.ENOENT, "no LUO handler for this fd kind in kernel 9.9-test"),
        ("CREATE_SESSION", errno.ENOTTY, "kernel without LUO, or a 32-bit process"),
        ("open", errno.EIO, "reboot cold"),
        ("CREATE_SESSION", errno.EEXIST, "dummy session"),
        ("RETRIEVE_SESSION", errno.EINVAL, "already retrieved"),
        ("RETRIEVE_FD", errno.ENOMEM, "permanent"),
        ("reboot", errno.EINVAL, "no kexec image loaded"),
        ("reboot", errno.EIO, "rolled it back"),
        ("kexec_file_load", errno.ENOEXEC, "not a kernel image"),
    ],
)
def test_hints(op: str, code: int, words: str) -> None:
    assert words in hint_for(op, code, release="9.9-test")


def test_luo_error_is_an_oserror_with_subject_and_code() -> None:
    error = LuoError(errno.EBUSY, "PRESERVE_FD", session="luod:vm1", token=3)
    assert isinstance(error, OSError)
    assert (error.errno, error.op, error.session, error.token) == (
        errno.EBUSY,
        "PRESERVE_FD",
        "luod:vm1",
        3,
    )
    assert error.code == "luo-ebusy"
    text = str(error)
    assert "PRESERVE_FD" in text and "luod:vm1" in text and "0x3" in text and "hint:" in text


def test_luo_error_pickles_with_its_fields() -> None:
    error = pickle.loads(pickle.dumps(LuoError(errno.ENOENT, "open", detail="/dev/liveupdate")))
    assert (error.errno, error.op, error.detail) == (errno.ENOENT, "open", "/dev/liveupdate")
