"""Choosing the kexec mode (pure), the facts gathered from the host, and the preflight check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from luod.core import preflight
from luod.core.kexec_mode import KexecPlan, SystemdFacts, choose
from luod.daemon import systemd
from luod.errors import LuodError

GOOD = SystemdFacts("systemd", 262, True, "luod.service")


def test_auto_takes_systemd_when_every_fact_holds() -> None:
    plan = choose("auto", GOOD)
    assert plan.mode == "systemd" and plan.problem is None
    assert "262" in plan.reason and "luod.service" in plan.reason


@pytest.mark.parametrize(
    ("facts", "why"),
    [
        (SystemdFacts("keeper", 262, True), "custody is 'keeper'"),
        (SystemdFacts("systemd", None), "PID 1 is not systemd"),
        (SystemdFacts("systemd", 260, True), "older than 261"),
        (SystemdFacts("systemd", 262, False, "luod.service"), "FileDescriptorStorePreserve"),
    ],
)
def test_auto_falls_back_to_direct_and_says_why(facts: SystemdFacts, why: str) -> None:
    plan = choose("auto", facts)
    assert plan.mode == "direct" and plan.problem is None
    assert why in plan.reason


@pytest.mark.parametrize("facts", [SystemdFacts("memory"), SystemdFacts("systemd", 252, True)])
def test_configured_systemd_on_a_host_that_cannot_is_a_problem(facts: SystemdFacts) -> None:
    plan = choose("systemd", facts)
    assert plan.mode == "systemd" and plan.problem and plan.hint
    check = preflight.kexec_mode(plan)
    assert check.status is preflight.Status.FAIL
    assert check.hint == plan.hint


def test_configured_direct_is_direct_whatever_the_host() -> None:
    assert choose("direct", GOOD).mode == "direct"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="sometimes"):
        choose("sometimes", GOOD)


def test_preflight_reports_the_mode_that_applies() -> None:
    check = preflight.kexec_mode(choose("auto", GOOD))
    assert check.id == "kexec-mode" and check.status is preflight.Status.PASS
    assert check.message.startswith("systemd: systemctl kexec")
    fallback = preflight.kexec_mode(KexecPlan("direct", "auto: PID 1 is not systemd"))
    assert fallback.status is preflight.Status.PASS and "PID 1" in fallback.message


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("0::/system.slice/luod.service\n", "luod.service"),
        ("0::/system.slice/luod.service/keeper\n", "luod.service"),
        ("12:pids:/user.slice\n0::/user.slice/user-0.slice/session-1.scope\n", None),
    ],
)
def test_own_unit_from_the_cgroup_path(tmp_path: Path, text: str, unit: str | None) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(text)
    assert systemd.own_unit(cgroup) == unit


def test_systemd_version_parses_what_systemctl_show_prints() -> None:
    assert systemd._systemd_version("262.1-1") == 262
    assert systemd._systemd_version("252.39-1~deb12u1") == 252
    assert systemd._systemd_version("") is None
    assert systemd._systemd_version(None) is None


def test_facts_without_the_fd_store_ask_nothing_of_systemctl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("systemctl was run")

    monkeypatch.setattr(subprocess, "run", no_subprocess)  # what luod.daemon.systemd calls
    assert systemd.kexec_facts("keeper") == SystemdFacts("keeper")


def test_start_kexec_reports_systemctls_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Done:
        returncode, stdout, stderr = 1, "", 'Operation inhibited by "x"\n'

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(LuodError) as caught:
        systemd.start_kexec()
    assert caught.value.code == "systemctl-kexec-failed"
    assert "inhibited" in caught.value.message and caught.value.hint
