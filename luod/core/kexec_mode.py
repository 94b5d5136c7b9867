"""Which way the kexec goes: luod's own reboot(KEXEC) ("direct") or ``systemctl kexec``.

Pure: the facts about the host are gathered elsewhere (luod.daemon.systemd) and passed in.

- **direct**: luod, alive and holding every session, writes the manifest and calls
  reboot(LINUX_REBOOT_CMD_KEXEC). Services are not stopped and filesystems not unmounted
  (luod syncs first). Works everywhere LUO works.
- **systemd**: luod has loaded the image (kexec_file_load), every session fd sits in its unit's
  fd store; ``systemctl kexec`` stops the host in order and systemd (≥ 261, with
  ``FileDescriptorStorePreserve=yes``) carries the fd store across the kexec, handing the
  sessions back through ``LISTEN_FDS`` after it (docs/kernel.md §7.4: measured with 262).

``auto`` takes systemd only when every fact says it will work, and says why otherwise.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from luod.values import Value

MODES: Final = ("auto", "direct", "systemd")
MIN_SYSTEMD: Final = 261  # the first release whose fd store survives systemctl kexec


class _SystemdFacts(NamedTuple):
    custody: str  # the custody luod runs with: "systemd" means its unit's fd store
    version: int | None = None
    preserve: bool = False  # FileDescriptorStorePreserve=yes on luod's own unit
    unit: str | None = None


class SystemdFacts(Value, _SystemdFacts):
    """What the host says. ``version`` None: PID 1 is not systemd (or did not answer)."""

    __slots__ = ()


class _KexecPlan(NamedTuple):
    mode: str  # "direct" | "systemd"
    reason: str
    problem: str | None = None  # configured "systemd" but the host cannot do it
    hint: str = ""


class KexecPlan(Value, _KexecPlan):
    __slots__ = ()

    def to_dict(self) -> dict[str, str | None]:
        return {"mode": self.mode, "reason": self.reason, "problem": self.problem}


def choose(configured: str, facts: SystemdFacts) -> KexecPlan:
    if configured not in MODES:
        raise ValueError(f"kexec mode {configured!r} is not one of {', '.join(MODES)}")
    if configured == "direct":
        return KexecPlan("direct", "configured: luod calls reboot(KEXEC) itself")
    missing = _missing(facts)
    if missing is None:
        unit = facts.unit or "luod's unit"
        return KexecPlan(
            "systemd",
            f"systemctl kexec: systemd {facts.version} carries the sessions in the fd store "
            f"of {unit}" + (" (auto)" if configured == "auto" else ""),
        )
    what, hint = missing
    if configured == "auto":
        return KexecPlan("direct", f"auto: {what}, so luod calls reboot(KEXEC) itself")
    return KexecPlan("systemd", "configured", problem=what, hint=hint)


def _missing(facts: SystemdFacts) -> tuple[str, str] | None:
    """The first fact that rules systemd mode out, with what would fix it."""
    if facts.custody != "systemd":
        return (
            f"luod's custody is {facts.custody!r}, not systemd's fd store",
            "run luod as luod.service with FileDescriptorStoreMax= (custody.mode = auto)",
        )
    if facts.version is None:
        return "PID 1 is not systemd", "use kexec.mode = direct"
    if facts.version < MIN_SYSTEMD:
        return (
            f"systemd {facts.version} is older than {MIN_SYSTEMD} (its fd store does not "
            "survive a kexec)",
            "upgrade systemd, or use kexec.mode = direct",
        )
    if not facts.preserve:
        return (
            f"{facts.unit or 'luod.service'} lacks FileDescriptorStorePreserve=yes",
            "set FileDescriptorStorePreserve=yes in luod.service (the shipped unit has it)",
        )
    return None
