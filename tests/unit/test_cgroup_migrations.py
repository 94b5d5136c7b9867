"""The preflight's ``cgroup-migrations`` check: a VM whose VMM runs in a cgroup of its own is
reclaimed after the kexec through a cgroup migration, which waits for an RCU grace period unless
cgroup v2 favors migrations (docs/kernel.md §6.4). The probe of the mount (from a stand-in
mountinfo, and this host's own), the check's verdicts, and which VMs count as apart."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from luod.core import preflight
from luod.daemon.connections import VmmConnections
from luod.daemon.update import UpdateRequest
from luod.kernel import charged
from luod.kernel.charged import migrations_favored
from tests.rest.harness import Luod

V2 = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
V1 = "31 24 0:27 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory\n"
ROOT = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
LINE = "liveupdate=on kho=on"


def _mountinfo(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "mountinfo"
    path.write_text(text)
    return path


def test_the_mount_says_whether_migrations_are_favored(tmp_path: Path) -> None:
    favored = _mountinfo(tmp_path / "a", ROOT + V2 + "rw,nsdelegate,favordynmods\n")
    plain = _mountinfo(tmp_path / "b", ROOT + V2 + "rw,nsdelegate,memory_recursiveprot\n")
    assert migrations_favored(favored) is True
    assert migrations_favored(plain) is False
    assert charged.cgroup2_options(plain) == ["rw", "nsdelegate", "memory_recursiveprot"]


def test_no_cgroup_v2_at_the_root_is_none(tmp_path: Path) -> None:
    elsewhere = V2.replace("/sys/fs/cgroup ", "/sys/fs/cgroup/unified ")
    assert migrations_favored(_mountinfo(tmp_path, ROOT + V1 + elsewhere + "rw\n")) is None
    assert migrations_favored(tmp_path / "missing") is None


def test_the_last_mount_at_the_root_is_the_one_seen(tmp_path: Path) -> None:
    remounted = ROOT + V2 + "rw\n" + V2.replace("30 24", "40 24") + "rw,favordynmods\n"
    assert migrations_favored(_mountinfo(tmp_path, remounted)) is True


def test_this_host(tmp_path: Path) -> None:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    v2 = [line for line in lines if " /sys/fs/cgroup " in line and " - cgroup2 " in line]
    expected = ("favordynmods" in v2[-1]) if v2 else None
    assert migrations_favored() is expected


def test_no_vmm_apart_passes() -> None:
    check = preflight.cgroup_migrations((), LINE, False)
    assert check.status is preflight.Status.PASS and "no cgroup migration" in check.message


def test_vmms_apart_without_favordynmods_warn() -> None:
    check = preflight.cgroup_migrations(("vm2", "vm1"), LINE, False)
    assert check.status is preflight.Status.WARN
    assert check.message.startswith("VMs whose VMM runs in a cgroup of its own: 2 (vm1, vm2)")
    assert "RCU grace period" in check.message
    assert "cgroup_favordynmods=true" in check.hint
    many = preflight.cgroup_migrations(tuple(f"vm{i}" for i in range(5)), LINE, None)
    assert "(vm0, vm1, vm2, ...)" in many.message and many.status is preflight.Status.WARN


def test_the_next_command_line_decides_first() -> None:
    on = preflight.cgroup_migrations(("vm1",), LINE + " cgroup_favordynmods=true", False)
    assert on.status is preflight.Status.PASS and "next kernel favors" in on.message
    off = preflight.cgroup_migrations(("vm1",), LINE + " cgroup_favordynmods=false", True)
    assert off.status is preflight.Status.WARN  # mounted so now, refused by the next kernel


def test_a_remounted_host_passes_with_a_note() -> None:
    check = preflight.cgroup_migrations(("vm1",), LINE, True)
    assert check.status is preflight.Status.PASS
    assert "mounted with favordynmods" in check.message and "next boot" in check.message


def test_the_check_runs_with_the_others() -> None:
    info = SimpleNamespace(device_present=True, release="7.2.13", kho_enabled=True)
    ctx = preflight.PreflightInput(
        info,  # type: ignore[arg-type]
        [],
        None,
        LINE,
        apart=("vm1",),
        migrations_favored=False,
    )
    [check] = [c for c in preflight.run(ctx) if c.id == "cgroup-migrations"]
    assert check.status is preflight.Status.WARN


def _conn(cgroup: str | None, closed: bool = False) -> SimpleNamespace:
    return SimpleNamespace(peer=SimpleNamespace(cgroup=cgroup), subscribed=set(), closed=closed)


def test_apart_are_the_open_connections_in_other_known_cgroups() -> None:
    connections = VmmConnections()
    connections.track("same", _conn("/luod.service"))
    connections.track("own", _conn("/luod-qemu@own.service"))
    connections.track("unknown", _conn(None))
    connections.track("closed", _conn("/x.scope", closed=True))
    assert connections.apart("/luod.service") == ["own"]


def test_the_driver_counts_migrations_on_the_real_kernel_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the simulator every RECLAIM retrieves in place: nothing is apart. With the kernel's
    platform, a VMM in another cgroup than luod's is, and the mount is asked."""

    def check() -> preflight.Check:
        checks = luod.driver.check(UpdateRequest(luod.kernel))
        [found] = [c for c in checks if c.id == "cgroup-migrations"]
        return found

    async def scenario() -> None:
        vmm = await luod.handover_vm("vm1")
        vmm.peer = vmm.peer._replace(cgroup="/luod-qemu@vm1.service")
        assert "no cgroup migration" in check().message
        monkeypatch.setattr(luod.daemon.backend.platform, "name", "kernel")
        monkeypatch.setattr(charged, "migrations_favored", lambda: False)
        warned = check()
        assert warned.status is preflight.Status.WARN and "(vm1)" in warned.message
        vmm.peer = vmm.peer._replace(cgroup=charged.cgroup_of(os.getpid()))  # luod's own
        assert check().status is preflight.Status.PASS

    luod = Luod(tmp_path / "luod")
    try:
        asyncio.run(scenario())
    finally:
        luod.close()
