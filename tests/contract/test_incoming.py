"""Incoming sessions after a kexec: retrieve, finish, release (docs/kernel.md §4.5, §4.7, §4.8,
§5.6)."""

from __future__ import annotations

import errno
import os
import struct
from typing import Any

import pytest

from luod.kernel import LuoError, uapi
from tests.contract.harness import Luo, read_all

pytestmark = pytest.mark.boots(2)


def expect_errno(code: int, call: Any) -> None:
    with pytest.raises(LuoError) as info:
        call()
    assert info.value.errno == code, str(info.value)


def preserve_two(name: str) -> Any:
    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.create(name)
        session.preserve(luo.memfd(b"first"), 1)
        session.preserve(luo.memfd(b"second"), 2)
        luo.carry(session)

    return stage1


def test_retrieve_session_twice_is_einval(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        luo.retrieve("kx-twice")
        expect_errno(errno.EINVAL, lambda: luo.retrieve("kx-twice"))

    boots.run(preserve_two("kx-twice"), stage2)


def test_retrieve_fd_unknown_token_is_enoent(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-unknown-token")
        expect_errno(errno.ENOENT, lambda: session.retrieve(99))

    boots.run(preserve_two("kx-unknown-token"), stage2)


def test_retrieve_fd_twice_returns_the_same_open_file(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-same-file")
        first, second = luo.own(session.retrieve(1)), luo.own(session.retrieve(1))
        assert first.fileno() != second.fileno()
        os.lseek(first.fileno(), 3, os.SEEK_SET)
        assert os.lseek(second.fileno(), 0, os.SEEK_CUR) == 3

    boots.run(preserve_two("kx-same-file"), stage2)


def test_a_retrieved_fd_closed_can_be_retrieved_again(luo: Luo, boots: Any) -> None:
    """A retrieve helper lost with the only fd (luod.kernel.retriever) costs nothing: the next
    RETRIEVE_FD of that token gives the file back, its contents intact (docs/kernel.md §6.4)."""

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-lost-fd")
        os.close(session.retrieve(1).detach())
        assert read_all(luo.own(session.retrieve(1))) == b"first"

    boots.run(preserve_two("kx-lost-fd"), stage2)


def test_files_retrieve_in_any_order(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-any-order")
        assert read_all(luo.own(session.retrieve(2))) == b"second"
        assert read_all(luo.own(session.retrieve(1))) == b"first"

    boots.run(preserve_two("kx-any-order"), stage2)


def test_preserve_on_retrieved_session_is_einval(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-preserve-in")
        expect_errno(errno.EINVAL, lambda: session.preserve(luo.memfd(b"new"), 3))

    boots.run(preserve_two("kx-preserve-in"), stage2)


def test_finish_before_every_fd_was_retrieved_destroys_the_rest(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-partial")
        kept = luo.own(session.retrieve(1))
        session.finish()
        assert read_all(kept) == b"first"
        expect_errno(errno.ENOENT, lambda: session.retrieve(2))

    boots.run(preserve_two("kx-partial"), stage2)


def test_finish_twice_succeeds(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-finish-twice")
        session.finish()
        session.finish()
        assert session.name == "kx-finish-twice"

    boots.run(preserve_two("kx-finish-twice"), stage2)


def test_finish_with_reserved_nonzero_is_einval(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-finish-reserved")
        buf = bytearray(struct.pack("<II", 8, 1))
        with pytest.raises(OSError) as info:
            luo.backend.platform.ioctl(session.fileno(), uapi.SESSION_FINISH, buf)
        assert info.value.errno == errno.EINVAL

    boots.run(preserve_two("kx-finish-reserved"), stage2)


def test_closing_a_retrieved_session_acts_as_finish(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-close-finish")
        kept = luo.own(session.retrieve(1))
        session.close()
        assert read_all(kept) == b"first"
        expect_errno(errno.ENOENT, lambda: luo.retrieve("kx-close-finish"))

    boots.run(preserve_two("kx-close-finish"), stage2)


def test_session_closed_before_kexec_is_gone(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.create("kx-closed-early")
        session.preserve(luo.memfd(b"lost"), 1)
        session.close()

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        expect_errno(errno.ENOENT, lambda: luo.retrieve("kx-closed-early"))

    boots.run(stage1, stage2)


def test_outgoing_session_may_reuse_an_incoming_name(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        incoming = luo.retrieve("kx-reuse-name")
        outgoing = luo.create("kx-reuse-name")
        assert incoming.name == outgoing.name == "kx-reuse-name"

    boots.run(preserve_two("kx-reuse-name"), stage2)


def test_retrieved_memfd_cannot_be_preserved_before_finish(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        incoming = luo.retrieve("kx-rechain")
        fd = luo.own(incoming.retrieve(1))
        outgoing = luo.create("kx-rechain-out")
        expect_errno(errno.EBUSY, lambda: outgoing.preserve(fd, 1))
        incoming.finish()
        outgoing.preserve(fd, 1)

    boots.run(preserve_two("kx-rechain"), stage2)


def test_get_name_works_on_incoming_before_and_after_finish(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-name-in")
        assert session.name == "kx-name-in"
        session.finish()
        assert session.name == "kx-name-in"

    boots.run(preserve_two("kx-name-in"), stage2)


def test_probe_counts_the_live_update_and_names_the_previous_kernel(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> dict[str, Any]:
        info = luo.backend.info()
        return {"number": info.liveupdate_number, "release": info.release}

    def stage2(luo: Luo, state: dict[str, Any]) -> None:
        info = luo.backend.info()
        assert info.liveupdate_number == state["number"] + 1
        assert info.previous_release == state["release"]

    boots.run(stage1, stage2)


@pytest.mark.boots(3)
def test_session_never_retrieved_is_gone_after_another_kexec(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        pass  # leave it unretrieved

    def stage3(luo: Luo, _: dict[str, Any]) -> None:
        expect_errno(errno.ENOENT, lambda: luo.retrieve("kx-abandoned"))

    boots.run(preserve_two("kx-abandoned"), stage2, stage3)


@pytest.mark.boots(3)
def test_chained_update_carries_data_written_between_updates(luo: Luo, boots: Any) -> None:
    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        incoming = luo.retrieve("kx-chain")
        fd = luo.own(incoming.retrieve(1))
        incoming.finish()
        os.pwrite(fd.fileno(), b"FIRST", 0)
        outgoing = luo.create("kx-chain")
        outgoing.preserve(fd, 1)
        luo.carry(outgoing)

    def stage3(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-chain")
        assert read_all(luo.own(session.retrieve(1))) == b"FIRST"
        assert luo.backend.info().liveupdate_number >= 2
        session.finish()

    boots.run(preserve_two("kx-chain"), stage2, stage3)
