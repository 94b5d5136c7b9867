"""Preflight: every check that must pass before anything irreversible (docs/architecture.md §5).

Each check has an id, a status (pass/warn/fail), a message and a hint. Checks only read; the
kexec_file_load itself happens in prepare, where a refusal also stops the update.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from luod.core import dialect
from luod.core.kexec_mode import KexecPlan
from luod.core.model import STATE_SESSION, Mode, VmRecord, VmState
from luod.errors import LuodError
from luod.kernel import images
from luod.kernel.probes import KernelInfo, cmdline_flag

if TYPE_CHECKING:  # the handover-ABI readers load with an update, not at start-up
    from luod.core.compat import Assessment

BZIMAGE_MAGIC_OFFSET: Final = 0x202
MAX_FILES_PER_SESSION: Final = 63 * 10000
RESERVE_FOR_NEXT_KERNEL: Final = 512 << 20


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    id: str
    status: Status
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class PreflightInput:
    info: KernelInfo
    vms: Iterable[VmRecord]
    kernel: Path | None
    cmdline: str
    subscribed: frozenset[str] = frozenset()
    mem_total: int = 0
    fd_limit: int = 0
    kexec: KexecPlan | None = None
    vmms: Mapping[str, frozenset[str]] = field(default_factory=dict)  # VM -> its VMM's HELLO
    abi: Assessment | None = None  # luod.core.compat.assess: the handover ABI of A and B
    running: str | None = None  # the phase of an update in progress (None: none runs)
    apart: tuple[str, ...] = ()  # VMs whose VMM runs in another cgroup than luod (real kernel)
    migrations_favored: bool | None = None  # cgroup v2 mounted with favordynmods (None: no v2)


def run(ctx: PreflightInput) -> list[Check]:
    vms = list(ctx.vms)
    return [
        idle(ctx.running),
        device(ctx.info),
        kho(ctx.info),
        kernel_image(ctx.kernel),
        next_cmdline(ctx.cmdline),
        files_acceptable(vms),
        memory_headroom(vms, ctx.mem_total),
        limits(vms, ctx.fd_limit),
        names(vms),
        handed_over(vms, ctx.subscribed),
        pausable(vms, ctx.vmms),
        vmms_connected(vms, ctx.subscribed),
        kexec_mode(ctx.kexec),
        cgroup_migrations(ctx.apart, ctx.cmdline, ctx.migrations_favored),
        *handover_abi(ctx.abi),
    ]


def failed(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if c.status is Status.FAIL]


class Refused(LuodError):
    """``preflight-failed``: an update refused before anything changed, with every check that
    ran (so that nobody runs them again to show them)."""

    def __init__(self, checks: list[Check]) -> None:
        refusing = failed(checks)
        super().__init__(
            "preflight-failed",
            "preflight refused: " + ", ".join(c.id for c in refusing),
            "; ".join(f"{c.id}: {c.message} ({c.hint})" for c in refusing),
        )
        self.checks = checks


def idle(running: str | None) -> Check:
    if running is not None:
        return Check(
            "update-idle",
            Status.FAIL,
            f"an update is already in progress ({running})",
            "wait for it (luoctl update wait), or abort it",
        )
    return Check("update-idle", Status.PASS, "no update is in progress")


def vmms_connected(vms: list[VmRecord], connected: frozenset[str]) -> Check:
    """VMs whose VMM is gone: luod keeps their memory, but nobody pauses or reclaims them."""
    gone = sorted(vm.id for vm in vms if vm.state is not VmState.LOST and vm.id not in connected)
    if gone:
        return Check(
            "vmm-connected",
            Status.WARN,
            "VMs whose VMM is disconnected: " + ", ".join(gone),
            "their memory crosses the update, but no VMM pauses or reclaims it: restart "
            "their VMMs, or 'luoctl vm drop ID' the VMs that are gone for good",
        )
    return Check("vmm-connected", Status.PASS, "every VM's VMM is connected")


def device(info: KernelInfo) -> Check:
    if info.device_present:
        return Check("device", Status.PASS, f"/dev/liveupdate present on {info.release}")
    return Check(
        "device",
        Status.FAIL,
        "no /dev/liveupdate",
        "boot a kernel with CONFIG_LIVEUPDATE and liveupdate=on",
    )


def kho(info: KernelInfo) -> Check:
    if info.kho_enabled:
        return Check("kho", Status.PASS, "kexec handover (KHO) is on")
    return Check(
        "kho",
        Status.FAIL,
        "KHO is off, so LUO is off",
        "boot with kho=on (or CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y)",
    )


def kernel_image(kernel: Path | None) -> Check:
    if kernel is None:
        return Check("kernel-image", Status.WARN, "no next kernel given", "pass the image path")
    try:
        with images.open_image(kernel) as image:  # never blocks: regular files only
            image.seek(BZIMAGE_MAGIC_OFFSET)
            magic = image.read(4)
    except OSError as exc:
        return Check(
            "kernel-image",
            Status.FAIL,
            f"cannot read {kernel}: {exc.strerror}",
            "give the path of the next kernel's bzImage",
        )
    if magic != b"HdrS":
        return Check(
            "kernel-image",
            Status.FAIL,
            f"{kernel} is not a bzImage",
            "kexec_file_load would refuse it (ENOEXEC): give an x86_64 bzImage",
        )
    return Check(
        "kernel-image", Status.PASS, f"{kernel} is a bzImage (loaded with kexec_file_load)"
    )


def next_cmdline(cmdline: str) -> Check:
    if not cmdline_flag(cmdline, "liveupdate"):
        return Check(
            "next-cmdline",
            Status.FAIL,
            "the next kernel's command line lacks liveupdate=on",
            "add liveupdate=on (LUO is off by default): every session would be lost",
        )
    if cmdline_flag(cmdline, "kho") is False:
        return Check(
            "next-cmdline",
            Status.FAIL,
            "the next kernel's command line has kho=off",
            "remove kho=off: without KHO the next kernel has no LUO",
        )
    if cmdline_flag(cmdline, "kho") is None:
        return Check(
            "next-cmdline",
            Status.WARN,
            "liveupdate=on, but no kho=on",
            "fine if the next kernel has CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y",
        )
    return Check("next-cmdline", Status.PASS, "liveupdate=on and kho=on")


def files_acceptable(vms: list[VmRecord]) -> Check:
    rejected = [f"{vm.id}/{name}: {why}" for vm in vms for name, why in vm.rejected.items()]
    if rejected:
        return Check(
            "files",
            Status.FAIL,
            "files luod could not preserve: " + "; ".join(rejected),
            "a hugetlb memfd cannot be preserved: back guest RAM with plain memfds",
        )
    sealed = [f"{vm.id}/{f.name}" for vm in vms for f in vm.files.values() if f.exec_sealed]
    if sealed:
        return Check(
            "files",
            Status.WARN,
            "F_SEAL_EXEC memfds: " + ", ".join(sealed),
            "they come back permanently write-sealed (docs/kernel.md §6.4): create memfds "
            "with MFD_EXEC, not MFD_NOEXEC_SEAL",
        )
    return Check("files", Status.PASS, "every preserved file is an acceptable memfd")


def memory_headroom(vms: list[VmRecord], mem_total: int) -> Check:
    preserved = sum(f.size for vm in vms for f in vm.files.values())
    if not mem_total:
        return Check("memory", Status.WARN, f"{preserved} bytes preserved; MemTotal unknown")
    if preserved + RESERVE_FOR_NEXT_KERNEL > mem_total:
        return Check(
            "memory",
            Status.FAIL,
            f"{preserved >> 20} MiB preserved of {mem_total >> 20} MiB",
            "the next kernel needs room to boot: preserve less or add memory",
        )
    status = Status.WARN if preserved > mem_total * 0.8 else Status.PASS
    return Check("memory", status, f"{preserved >> 20} MiB preserved of {mem_total >> 20} MiB")


def limits(vms: list[VmRecord], fd_limit: int) -> Check:
    sessions = len(vms) + 1
    if fd_limit and sessions + 64 > fd_limit:
        return Check(
            "limits",
            Status.FAIL,
            f"{sessions} sessions near RLIMIT_NOFILE {fd_limit}",
            "raise LimitNOFILE= for luod",
        )
    big = [vm.id for vm in vms if len(vm.files) > MAX_FILES_PER_SESSION]
    if big:
        return Check("limits", Status.FAIL, f"too many files in {', '.join(big)}", "")
    return Check("limits", Status.PASS, f"{sessions} sessions within limits")


def names(vms: list[VmRecord]) -> Check:
    sessions = [vm.session for vm in vms]
    clashes = {s for s in sessions if sessions.count(s) > 1 or s in (STATE_SESSION, "systemd")}
    if clashes:
        return Check(
            "names",
            Status.FAIL,
            f"session name collision: {sorted(clashes)}",
            "luod never relies on EEXIST (docs/kernel.md §4.4)",
        )
    return Check("names", Status.PASS, "session names are unique")


def handed_over(vms: list[VmRecord], subscribed: frozenset[str]) -> Check:
    missing = []
    for vm in vms:
        if vm.state is VmState.LOST:
            continue
        if vm.mode is Mode.HANDOVER and not vm.files:
            missing.append(f"{vm.id} (nothing preserved)")
        elif vm.mode is Mode.DELEGATION and vm.id not in subscribed:
            missing.append(f"{vm.id} (its VMM is not connected)")
    if missing:
        return Check(
            "handover",
            Status.FAIL,
            "VMs not ready: " + ", ".join(missing),
            "each VM must PRESERVE its RAM or stay SUBSCRIBEd; DROP the others",
        )
    return Check("handover", Status.PASS, "every VM has handed over or subscribed")


def pausable(vms: list[VmRecord], vmms: Mapping[str, frozenset[str]]) -> Check:
    """How the freeze will treat each VM, by the dialect its VMM speaks (luod.core.dialect)."""
    steps = {
        vm.id: dialect.barrier_step("FREEZE", vm.mode, vmms.get(vm.id), preserve_acked=True)
        for vm in vms
        if vm.state is not VmState.LOST
    }
    refused = [f"{vm} ({s.note})" for vm, s in steps.items() if s.action is dialect.Action.REFUSE]
    if refused:
        return Check(
            "pause",
            Status.FAIL,
            "VMs luod cannot pause: " + "; ".join(refused),
            "use a VMM client that sends HELLO with capabilities [freeze, resume] (luod's "
            "client library does), or stop that VMM (a VM without one counts as paused)",
        )
    trusted = sorted(  # connected, yet nothing to wait for: luo-agent's dialect
        vm for vm, s in steps.items() if s.action is dialect.Action.COUNT and vm in vmms
    )
    if trusted:
        return Check(
            "pause",
            Status.WARN,
            "luo-agent dialect, never sent FREEZE: " + ", ".join(trusted),
            "their one READY to START_PRESERVATION counts as paused: their VMMs must not "
            "write guest memory after it",
        )
    return Check("pause", Status.PASS, "every VM will be paused, or has no VMM running it")


def kexec_mode(plan: KexecPlan | None) -> Check:
    """Which kexec applies (luod.core.kexec_mode) and why; fail when configured but impossible."""
    if plan is None:
        return Check("kexec-mode", Status.PASS, "direct: luod calls reboot(KEXEC) itself")
    if plan.problem is not None:
        return Check("kexec-mode", Status.FAIL, f"{plan.mode}: {plan.problem}", plan.hint)
    return Check("kexec-mode", Status.PASS, f"{plan.mode}: {plan.reason}")


def cgroup_migrations(apart: Sequence[str], cmdline: str, favored: bool | None) -> Check:
    """Never fails. After the kexec a VM whose VMM runs in a cgroup of its own is reclaimed by
    a helper that enters that cgroup (docs/kernel.md §6.4): a cgroup migration, which waits for
    an RCU grace period unless cgroup v2 favors migrations (``favordynmods``) or another one
    came just before. Warns when the next kernel will not favor them."""
    if not apart:
        return Check(
            "cgroup-migrations", Status.PASS, "no VMM runs apart from luod: no cgroup migration"
        )
    who = f"VMs whose VMM runs in a cgroup of its own: {len(apart)} ({', '.join(sorted(apart)[:3])}"
    who += ", ...)" if len(apart) > 3 else ")"
    asked = cmdline_flag(cmdline, "cgroup_favordynmods")
    if asked:
        return Check(
            "cgroup-migrations", Status.PASS, f"{who}; the next kernel favors cgroup migrations"
        )
    if favored and asked is None:
        return Check(
            "cgroup-migrations",
            Status.PASS,
            f"{who}; cgroup v2 is mounted with favordynmods (not from the command line: "
            "the next boot must mount it so again)",
        )
    return Check(
        "cgroup-migrations",
        Status.WARN,
        f"{who}: after the kexec each of their RECLAIMs may wait for an RCU grace period "
        "(a cgroup migration; milliseconds on a host, 5-18 ms under TCG)",
        "add cgroup_favordynmods=true to the next kernel's command line (and the boot "
        "loader's), or mount cgroup v2 with favordynmods at boot",
    )


def handover_abi(assessment: Assessment | None) -> list[Check]:
    """Can the next kernel take the handover (luod.core.abi), and was the pair qualified?"""
    if assessment is None:
        return []
    verdict, qualified = assessment.verdict, assessment.qualification
    return [
        Check("handover-abi", Status(verdict.status), verdict.message, verdict.hint),
        Check("qualified", Status(qualified.status), qualified.message, qualified.hint),
    ]


def mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] or os.sysconf("SC_OPEN_MAX")
