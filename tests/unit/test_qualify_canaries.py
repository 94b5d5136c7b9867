"""The canaries' I/O on the simulator, in-process: preserved, carried by a simulated kexec,
retrieved and judged in the next boot; dropped (custody too) when a step fails; a canary
session custody hands back (systemd's fd store) is adopted rather than retrieved again."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from luod.core import compat, qualify
from luod.custody.memory import MemoryCustody
from luod.daemon.qualification_canaries import Canaries
from luod.kernel import Backend, OwnedFd, _simabi
from luod.kernel.sim import SimulatedKexec, sim_backend

pytestmark = pytest.mark.unit
OPTIONS = qualify.Options(large_mib=2, many_files=70, sessions=3)


def boot(state: Path) -> Backend:
    return sim_backend(state, read_abi=compat.CACHE.declared)


def kexec(backend: Backend, state: Path) -> None:
    backend.load_kernel(_simabi.installed_native_image(state), cmdline=backend.info().cmdline)
    with pytest.raises(SimulatedKexec):
        backend.reboot_kexec()


def test_canaries_cross_a_simulated_kexec_and_every_check_passes(tmp_path: Path) -> None:
    state = tmp_path / "kernel"
    plan = qualify.plan("t1", OPTIONS, limit=100)
    before = Canaries(backend := boot(state), MemoryCustody())
    before.preserve(plan)
    assert before.held == sorted(s.name for s in plan)
    kexec(backend, state)
    after = Canaries(boot(state), MemoryCustody())
    checks = after.verify(plan)
    assert [c for c in checks if c.result != "pass"] == []
    assert len(checks) == len(plan) * 2 + 7 * 3 + 2 + 70 * 3 + 3 * 3  # retrieved+finished, files
    assert "yes" in {c.actual for c in checks if c.name.endswith(".empty: finished")}


def test_a_canary_missing_after_the_kexec_fails_its_retrieval(tmp_path: Path) -> None:
    state = tmp_path / "kernel"
    plan = qualify.plan("t2", OPTIONS, limit=100)
    Canaries(backend := boot(state), MemoryCustody()).preserve(plan[:1])
    kexec(backend, state)
    checks = Canaries(boot(state), MemoryCustody()).verify(plan[:2])
    [missing] = [c for c in checks if c.result == "fail"]
    assert missing.name == f"{plan[1].name}: retrieved" and "ENOENT" in missing.actual


def test_drop_closes_every_canary_and_custody_lets_go(tmp_path: Path) -> None:
    state = tmp_path / "kernel"
    custody = MemoryCustody()
    canaries = Canaries(backend := boot(state), custody)
    canaries.preserve(qualify.plan("t3", OPTIONS, limit=100))
    assert len(custody) == 3 + 3
    canaries.drop()
    assert canaries.held == [] and len(custody) == 0
    kexec(backend, state)  # nothing crosses: every canary session was closed before
    checks = Canaries(boot(state), MemoryCustody()).verify(
        qualify.plan("t3", OPTIONS, limit=100)[:1]
    )
    assert checks[0].result == "fail"


def test_eexist_on_the_first_canary_repairs_the_block_chain(tmp_path: Path) -> None:
    """51 outgoing sessions, then a canary whose name exists: the failed create leaves an
    empty block (docs/kernel.md §4.4); the throwaway session luod makes repairs it, so the
    next (simulated) kernel boots instead of panicking."""
    state = tmp_path / "kernel"
    backend = boot(state)
    plan = qualify.plan("t6", OPTIONS, limit=100)
    others = [backend.device.create_session(f"other-{n}") for n in range(50)]
    taken = backend.device.create_session(plan[0].name)  # 51: an exact multiple
    with pytest.raises(OSError):
        Canaries(backend, MemoryCustody()).preserve(plan[:1])
    kexec(backend, state)
    assert boot(state).info().liveupdate_number == 1  # booted: no panic
    for session in [*others, taken]:
        session.close()


def test_a_failure_while_preserving_drops_what_was_made(tmp_path: Path) -> None:
    state = tmp_path / "kernel"
    custody = MemoryCustody()
    canaries = Canaries(boot(state), custody)
    plan = qualify.plan("t4", OPTIONS, limit=100)
    clash = [plan[0], plan[1], plan[0]]  # the same name twice: EEXIST on the third
    with pytest.raises(OSError) as refused:
        canaries.preserve(clash)
    assert refused.value.errno == errno.EEXIST
    assert canaries.held == [] and len(custody) == 0


def test_a_session_custody_hands_back_is_adopted(tmp_path: Path) -> None:
    state = tmp_path / "kernel"
    plan = qualify.plan("t5", OPTIONS, limit=100)[:2]
    Canaries(first := boot(state), MemoryCustody()).preserve(plan)
    kexec(first, state)
    backend = boot(state)
    custody = MemoryCustody()
    session = backend.device.retrieve_session(plan[0].name)  # as systemd's fd store would
    custody.deposit(plan[0].name, session)
    session.close()
    checks = Canaries(backend, custody).verify(plan)
    assert all(c.result == "pass" for c in checks), [c for c in checks if c.result != "pass"]
    assert len(custody) == 0 and os.path.isdir(state)


class CountingCustody(MemoryCustody):
    def __init__(self) -> None:
        super().__init__()
        self.recovered = 0

    def recover(self) -> dict[str, OwnedFd]:
        self.recovered += 1
        return super().recover()


def test_verify_asks_custody_once_and_leaves_the_vms_sessions_held(tmp_path: Path) -> None:
    """custody.recover() duplicates every session held (a VM's too): one call for the plan,
    and what is not a canary stays in custody."""
    state = tmp_path / "kernel"
    plan = qualify.plan("t6", OPTIONS, limit=100)[:3]
    Canaries(first := boot(state), MemoryCustody()).preserve(plan)
    kexec(first, state)
    backend, custody = boot(state), CountingCustody()
    for name in (plan[0].name, plan[2].name):  # as systemd's fd store would hand them back
        session = backend.device.retrieve_session(name)
        custody.deposit(name, session)
        session.close()
    vm = backend.device.create_session("luod.vm1")
    custody.deposit("luod.vm1", vm)
    checks = Canaries(backend, custody).verify(plan)
    assert all(c.result == "pass" for c in checks), [c for c in checks if c.result != "pass"]
    assert custody.recovered == 1
    assert len(custody) == 1 and "luod.vm1" in custody
    vm.close()
