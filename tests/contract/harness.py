"""What every contract test gets: a backend, tracked objects, and a multi-boot runner.

The same test body runs against ``sim`` (an in-process SimKernel per test, kexec simulated in
process) and ``kernel`` (the real /dev/liveupdate, only inside the QEMU guest of tests/vm, where
each boot is a separate pytest run and the kexec happens between runs; see conftest.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from luod.kernel import Backend, LuoDevice, OpenDevice, OwnedFd, Session, memfd
from luod.kernel.sim import SimKernel, SimulatedKexec, sim_backend
from tests.bzimages import B_7_3, bzimage

Stage = Callable[["Luo", dict[str, Any]], dict[str, Any] | None]


class Closeable(Protocol):
    def close(self) -> None: ...


Owned = TypeVar("Owned", bound=Closeable)

CARRIED: list[Any] = []
"""Objects kept open across the kexec in a real-kernel stage run; never closed (the machine
kexecs with them)."""

FAKE_BZIMAGE = bzimage(B_7_3)
"""A synthetic bzImage of a kernel that takes the simulator's handover (tests/bzimages.py)."""


class Luo:
    """A backend plus every fd-owning object a test made, closed at teardown."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._owned: list[Closeable] = []
        self._carried: list[Any] = []

    @property
    def device(self) -> LuoDevice:
        return self.backend.device

    def own(self, obj: Owned) -> Owned:
        self._owned.append(obj)
        return obj

    def create(self, name: str) -> Session:
        return self.own(self.backend.device.create_session(name))

    def retrieve(self, name: str) -> Session:
        return self.own(self.backend.device.retrieve_session(name))

    @contextmanager
    def opened(self) -> Iterator[OpenDevice]:
        with self.backend.device.open() as device:
            yield device

    def memfd(self, data: bytes = b"", *, size: int | None = None, flags: int = 0) -> OwnedFd:
        fd = self.own(memfd.create("luotest", flags=flags | memfd.MFD_ALLOW_SEALING))
        os.ftruncate(fd.fileno(), len(data) if size is None else size)
        if data:
            os.pwrite(fd.fileno(), data, 0)
        return fd

    def carry(self, *objs: Any) -> None:
        """Keep these open until the kexec (the test's stage ends with the machine going down)."""
        for obj in objs:
            self._carried.append(obj)
            if obj in self._owned:
                self._owned.remove(obj)

    def carried_fds(self) -> set[int]:
        return {obj.fileno() for obj in self._carried if not _closed(obj)}

    def close_all(self, *, carried: bool) -> None:
        objs = list(reversed(self._owned)) + (self._carried if carried else [])
        self._owned.clear()
        if carried:
            self._carried.clear()
        for obj in objs:
            obj.close()

    def hand_over_carried(self) -> None:
        CARRIED.extend(self._carried)
        self._carried.clear()


def sim_kernel(backend: Backend) -> SimKernel:
    """The simulated kernel under a backend that ``sim_backend`` made (its test hooks)."""
    assert isinstance(backend.platform, SimKernel), backend.platform
    return backend.platform


def _closed(obj: Any) -> bool:
    return bool(getattr(obj, "closed", False))


def read_all(fd: OwnedFd) -> bytes:
    size = os.fstat(fd.fileno()).st_size
    return os.pread(fd.fileno(), size, 0)


class SimRunner:
    """Runs all stages in this process: stage, simulated kexec, new SimKernel, next stage."""

    def __init__(self, state_dir: Path, first: Luo) -> None:
        self.state_dir = state_dir
        self.luo = first
        self.luos = [first]

    def run(self, *stages: Stage) -> None:
        state: dict[str, Any] = {}
        for index, stage in enumerate(stages):
            if index:
                self._kexec()
            state = stage(self.luo, state) or {}

    def _kexec(self) -> None:
        image = self.state_dir / "next-bzImage"
        image.write_bytes(FAKE_BZIMAGE)
        backend = self.luo.backend
        backend.load_kernel(image, cmdline=backend.info().cmdline)
        try:
            backend.reboot_kexec()
        except SimulatedKexec:
            pass
        else:
            raise AssertionError("simulated reboot returned")
        self.luo.close_all(carried=True)  # the old "machine" is gone with all its fds
        self.luo = Luo(sim_backend(self.state_dir))
        self.luos.append(self.luo)


class KernelStageRunner:
    """One boot of a multi-boot test on the real kernel: run the stage for this boot only."""

    def __init__(self, luo: Luo, stage: int, state_file: Path, test_id: str) -> None:
        self.luo = luo
        self.stage = stage
        self.state_file = state_file
        self.test_id = test_id

    def run(self, *stages: Stage) -> None:
        saved = self._load()
        state = saved.get(self.test_id, {}) if self.stage > 1 else {}
        if self.stage > 1 and self.test_id not in saved:
            raise AssertionError(f"no state from boot {self.stage - 1} for {self.test_id}")
        result = stages[self.stage - 1](self.luo, state) or {}
        if self.stage < len(stages):
            saved[self.test_id] = result
            self.state_file.write_text(json.dumps(saved))
            self.luo.hand_over_carried()

    def _load(self) -> dict[str, Any]:
        if self.state_file.exists():
            return dict(json.loads(self.state_file.read_text()))
        return {}
