"""Across a kexec (docs/kernel.md §5.4–§5.8, §6.3, §6.4; the selftests' two-stage tests)."""

from __future__ import annotations

import fcntl
import hashlib
import os
from typing import Any

import pytest

from luod.kernel import LuoError, memfd
from tests.contract.harness import Luo, read_all

pytestmark = pytest.mark.boots(2)
MIB = 1 << 20


def pattern(size: int, seed: int) -> bytes:
    block = hashlib.sha256(seed.to_bytes(8, "little")).digest() * (4096 // 32)
    return (block * (size // len(block) + 1))[:size]


def expect_errno(code: int, call: Any) -> None:
    with pytest.raises(LuoError) as info:
        call()
    assert info.value.errno == code, str(info.value)


def test_kexec_simple(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.create("kx-simple")
        session.preserve(luo.memfd(b"hello kexec world"), 0x1A)
        luo.carry(session)

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-simple")
        assert read_all(luo.own(session.retrieve(0x1A))) == b"hello kexec world"
        session.finish()

    boots.run(stage1, stage2)


def test_kexec_multi_session(luo: Luo, boots: Any) -> None:
    layout = {"kx-ms-empty1": {}, "kx-ms-empty2": {}, "kx-ms-one": {0x1001: b"one"}}
    layout["kx-ms-two"] = {0x2002: b"two", 0x3003: b"three"}

    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        for name, files in layout.items():
            session = luo.create(name)
            for token, data in files.items():
                session.preserve(luo.memfd(data), token)
            luo.carry(session)

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        for name in reversed(layout):  # any order
            session = luo.retrieve(name)
            for token, data in layout[name].items():
                assert read_all(luo.own(session.retrieve(token))) == data
            session.finish()

    boots.run(stage1, stage2)


def test_kexec_stress_500_files(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.create("kx-500-files")
        for token in range(500):
            with memfd.create("f", 4096) as fd:
                os.pwrite(fd.fileno(), f"file {token}".encode(), 0)
                session.preserve(fd, token)
        luo.carry(session)

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.retrieve("kx-500-files")
        for token in range(500):
            with session.retrieve(token) as fd:
                assert os.pread(fd.fileno(), 16, 0).rstrip(b"\0") == f"file {token}".encode()
        session.finish()

    boots.run(stage1, stage2)


def test_kexec_stress_2000_sessions(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        luo.carry(*(luo.create(f"kx-many-{i}") for i in range(2000)))

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        for i in range(2000):
            session = luo.backend.device.retrieve_session(f"kx-many-{i}")
            session.finish()
            session.close()

    boots.run(stage1, stage2)


def test_kexec_64mib_memfd_comes_back_byte_identical(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> dict[str, Any]:
        data = pattern(64 * MIB, 64)
        session = luo.create("kx-64mib")
        session.preserve(luo.memfd(data), 1)
        luo.carry(session)
        return {"sha256": hashlib.sha256(data).hexdigest()}

    def stage2(luo: Luo, state: dict[str, Any]) -> None:
        session = luo.retrieve("kx-64mib")
        fd = luo.own(session.retrieve(1))
        assert os.fstat(fd.fileno()).st_size == 64 * MIB
        assert hashlib.sha256(read_all(fd)).hexdigest() == state["sha256"]
        session.finish()

    boots.run(stage1, stage2)


def test_writes_after_preserve_survive(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session, fd = luo.create("kx-late-write"), luo.memfd(b"before", size=4096)
        session.preserve(fd, 1)
        os.pwrite(fd.fileno(), b"after!", 0)
        luo.carry(session, fd)

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        fd = luo.own(luo.retrieve("kx-late-write").retrieve(1))
        assert os.pread(fd.fileno(), 6, 0) == b"after!"

    boots.run(stage1, stage2)


def test_a_sparse_memfd_written_after_preserve_carries_the_writes(luo: Luo, boots: Any) -> None:
    """As luod's handoff journal (session luod, token 1; docs/kernel.md §6.2): made empty with
    its size sealed, preserved before the freeze, written after it, anywhere in its size.
    PRESERVE_FD populates every page, so each write is carried; the rest reads as zeros."""
    size = 3 * 4096 + 100
    seals = memfd.F_SEAL_GROW | memfd.F_SEAL_SHRINK | memfd.F_SEAL_SEAL

    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session, fd = luo.create("kx-sparse-late"), luo.memfd(size=size)
        memfd.add_seals(fd, seals)
        session.preserve(fd, 1)
        os.pwrite(fd.fileno(), b"line one\n", 0)
        os.pwrite(fd.fileno(), b"tail", size - 4)  # in the last page, a hole until preserve
        luo.carry(session, fd)

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        fd = luo.own(luo.retrieve("kx-sparse-late").retrieve(1))
        data = read_all(fd)
        assert len(data) == size and memfd.get_seals(fd) == seals
        assert data[:9] == b"line one\n" and data[-4:] == b"tail"
        assert data[9:-4] == bytes(size - 13)

    boots.run(stage1, stage2)


def test_size_position_and_seals_survive(luo: Luo, boots: Any) -> None:
    seals = memfd.F_SEAL_GROW | memfd.F_SEAL_SHRINK

    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session, fd = luo.create("kx-meta"), luo.memfd(b"m", size=12345)
        memfd.add_seals(fd, seals)
        session.preserve(fd, 1)
        os.lseek(fd.fileno(), 777, os.SEEK_SET)
        luo.carry(session, fd)

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        fd = luo.own(luo.retrieve("kx-meta").retrieve(1))
        assert os.fstat(fd.fileno()).st_size == 12345
        assert os.lseek(fd.fileno(), 0, os.SEEK_CUR) == 777
        assert memfd.get_seals(fd) == seals

    boots.run(stage1, stage2)


def test_retrieved_memfd_is_0777_rdwr_and_close_on_exec(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session = luo.create("kx-mode")
        session.preserve(luo.memfd(b"mode"), 1)
        luo.carry(session)

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        fd = luo.own(luo.retrieve("kx-mode").retrieve(1))
        assert os.fstat(fd.fileno()).st_mode & 0o777 == 0o777
        assert fcntl.fcntl(fd.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert fcntl.fcntl(fd.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        os.pwrite(fd.fileno(), b"M", 0)

    boots.run(stage1, stage2)


def test_noexec_sealed_memfd_comes_back_write_sealed(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session, fd = luo.create("kx-noexec"), luo.memfd(b"data", flags=memfd.MFD_NOEXEC_SEAL)
        assert memfd.get_seals(fd) == memfd.F_SEAL_EXEC
        session.preserve(fd, 1)
        luo.carry(session)

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        fd = luo.own(luo.retrieve("kx-noexec").retrieve(1))
        assert memfd.get_seals(fd) == memfd.F_SEAL_EXEC | memfd.EXEC_SEAL_IMPLIES
        assert read_all(fd) == b"data"
        with pytest.raises(PermissionError):
            os.pwrite(fd.fileno(), b"x", 0)

    boots.run(stage1, stage2)


def test_seal_added_after_preserve_is_not_carried(luo: Luo, boots: Any) -> None:
    def stage1(luo: Luo, _: dict[str, Any]) -> None:
        session, fd = luo.create("kx-late-seal"), luo.memfd(b"s")
        session.preserve(fd, 1)
        memfd.add_seals(fd, memfd.F_SEAL_GROW)
        luo.carry(session, fd)

    def stage2(luo: Luo, _: dict[str, Any]) -> None:
        fd = luo.own(luo.retrieve("kx-late-seal").retrieve(1))
        assert memfd.get_seals(fd) == 0

    boots.run(stage1, stage2)
