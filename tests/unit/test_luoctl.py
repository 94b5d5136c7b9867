"""luoctl against a real luod REST API (the facade over a simulated luod, served by uvicorn on
a unix socket in the test's event loop); luoctl itself runs in a thread, as from a shell."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from luod.cli import commands, render
from luod.cli.client import Api
from luod.cli.main import main
from luod.core.clock import SystemClock
from luod.rest.app import create_app
from luod.rest.serve import Endpoints, serve_rest
from tests.rest.harness import FakeVmm, Luod, until

pytestmark = pytest.mark.anyio
TOKEN = "luoctl-test-token-0123456789"


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Host:
    """A luod serving its REST API, and a way to run luoctl against it."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.socket = state / "api.sock"
        self.luod = Luod(state)
        self.endpoints: Endpoints | None = None
        self._task: asyncio.Task[None] | None = None

    async def serve(self, **options: Any) -> None:
        found: list[Endpoints] = []
        app = create_app(self.luod.facade, keepalive=0.05)
        self._task = asyncio.create_task(
            serve_rest(app, unix_path=self.socket, group=None, ready=found.append, **options)
        )
        await until(lambda: found)
        self.endpoints = found[0]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def luoctl(self, *argv: str) -> Ran:
        out, err = io.StringIO(), io.StringIO()
        argv = ("--socket", str(self.socket), *argv)
        code = await asyncio.to_thread(main, list(argv), out=out, err=err)
        return Ran(code, out.getvalue(), err.getvalue())

    def kernel_args(self, *more: str) -> tuple[str, ...]:
        return ("--kernel", str(self.luod.kernel), "--reuse-cmdline", *more)


def fake_vmm(host: Host) -> FakeVmm:
    """The VMM connection of the one VM the host's luod holds: the harness's FakeVmm."""
    vmm = next(conn for _, conn in host.luod.connections)
    assert isinstance(vmm, FakeVmm)
    return vmm


async def test_status_human_and_json_anywhere_on_the_line(host: Host) -> None:
    human = await host.luoctl("status")
    assert human.code == 0 and "phase     idle" in human.out and "1.0 MiB preserved" in human.out
    for argv in (("--json", "status"), ("status", "--json")):
        ran = await host.luoctl(*argv)
        assert ran.json()["vms"] == 1 and ran.json()["phase"] == "idle"


async def test_vms_and_one_vm(host: Host) -> None:
    listing = await host.luoctl("vms")
    assert listing.out.split("\n")[1].split() == [
        "vm1",
        "handover",
        "preserved",
        "connected",
        "0",
        "1",
        "1.0",
        "MiB",
    ]
    one = await host.luoctl("vm", "vm1")
    assert "ram0" in one.out and "memfd" in one.out
    assert (await host.luoctl("vm", "vm1", "--json")).json()["files"][0]["token"] == 1


async def test_an_unknown_vm_fails_with_the_code_and_hint(host: Host) -> None:
    ran = await host.luoctl("vm", "vm9")
    assert ran.code == 1
    assert ran.err.splitlines() == [
        "luoctl: no VM 'vm9' [unknown-vm]",
        "hint: REGISTER or SUBSCRIBE it first",
    ]
    as_json = await host.luoctl("--json", "vm", "vm9")
    assert as_json.code == 1 and as_json.json()["code"] == "unknown-vm"


async def test_preflight_passes_or_refuses_with_exit_3(host: Host) -> None:
    assert (await host.luoctl("preflight", *host.kernel_args())).code == 0
    ran = await host.luoctl("preflight", "--kernel", "/nonexistent", "--cmdline", "ro")
    assert ran.code == 3
    assert "FAIL  kernel-image" in ran.out and "FAIL  next-cmdline" in ran.out
    assert "hint: add liveupdate=on" in ran.out


async def test_update_start_refused_by_preflight_is_exit_3_with_the_checks(host: Host) -> None:
    ran = await host.luoctl("update", "start", "--kernel", "/nonexistent", "--reuse-cmdline")
    assert ran.code == 3
    assert "[preflight-failed]" in ran.err and "FAIL kernel-image" in ran.err
    assert "hint: kernel-image: give the path" in ran.err
    dry = await host.luoctl("update", "start", *host.kernel_args("--dry-run"))
    assert dry.code == 0 and "preflight passed" in dry.out
    assert (await host.luoctl("update", "show", "--json")).json()["phase"] == "idle"


async def test_start_conflict_and_abort(host: Host) -> None:
    started = await host.luoctl("update", "start", *host.kernel_args("--deadline", "freezing=60"))
    assert started.code == 0 and "luoctl update watch" in started.out
    vmm = fake_vmm(host)
    await until(lambda: vmm.events("FREEZE"))
    again = await host.luoctl("update", "start", *host.kernel_args())
    assert again.code == 1 and "[update-running]" in again.err
    aborted = await host.luoctl("update", "abort", "--reason", "window closed")
    assert aborted.code == 0 and "aborted (by uid 0): window closed" in aborted.out
    nothing = await host.luoctl("update", "abort")
    assert nothing.code == 1 and "[wrong-state]" in nothing.err
    past = await host.luoctl("history")
    assert "aborted" in past.out and "window closed" in past.out


async def test_history_follows_the_cursor_oldest_first_and_last_n(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """luod pages newest first; luoctl shows a log (oldest first), across pages."""
    for n in range(5):
        refused = await host.luoctl("update", "start", "--kernel", f"/none-{n}", "--reuse-cmdline")
        assert refused.code == 3
    monkeypatch.setattr(commands, "HISTORY_PAGE", 2)  # three pages for five records
    asked: list[str] = []
    get = Api.get

    def counted(api: Api, path: str) -> Any:
        asked.append(path)
        return get(api, path)

    monkeypatch.setattr(Api, "get", counted)
    every = (await host.luoctl("history", "--json")).json()["history"]
    assert [path.split("&")[0] for path in asked] == ["/v1/history?limit=2"] * 3
    last = (await host.luoctl("history", "--json", "--last", "3")).json()["history"]
    table = (await host.luoctl("history")).out.splitlines()
    assert [r["request"]["kernel"] for r in every] == [f"/none-{n}" for n in range(5)]
    assert last == every[-3:]
    assert table[0].split()[:2] == ["FINISHED", "ID"] and len(table) == 6
    assert "/none-0" in table[1] and "/none-4" in table[5] and "refused" in table[5]


async def test_watch_follows_an_update_a_vmm_refuses_and_exits_4(host: Host) -> None:
    vmm = fake_vmm(host)
    watching = asyncio.create_task(host.luoctl("update", "watch"))
    await until(lambda: len(host.luod.facade.hub) == 1)
    assert (await host.luoctl("update", "start", *host.kernel_args())).code == 0
    await until(lambda: vmm.events("FREEZE"))
    await host.luod.ask(vmm, {"cmd": "READY", "id": "vm1", "error": "cannot pause"})
    ran = await watching
    assert ran.code == 4
    phases = [line.split("phase ")[1] for line in ran.out.splitlines() if "phase " in line]
    assert phases[0] == "idle: no update is running; waiting for one"
    assert [p.split(" (")[0] for p in phases[1:]] == [
        "idle -> preparing",
        "preparing -> prepared",
        "prepared -> freezing",
        "freezing -> aborting",
        "aborting -> idle",
    ]
    assert "vm1: freeze_ack" not in ran.out
    assert "aborted: vm-refused: VM vm1 answered FREEZE with: cannot pause" in ran.out


async def test_watch_across_the_kexec_ends_with_the_blackout(host: Host) -> None:
    vmm = fake_vmm(host)
    watching = asyncio.create_task(host.luoctl("update", "watch", "--json"))
    await until(lambda: len(host.luod.facade.hub) == 1)
    await host.luoctl("update", "start", *host.kernel_args())
    await until(lambda: vmm.events("FREEZE"))
    await host.luod.ask(vmm, {"cmd": "READY", "id": "vm1"})
    await until(lambda: host.luod.kexeced)
    await host.stop()  # the old kernel's luod is gone
    before = await watching
    assert before.code == 0
    assert [json.loads(line)["event"] for line in before.out.splitlines()][-1] == "PHASE"
    host.luod.close()

    host.luod = Luod(host.state)  # the new kernel's luod
    host.luod.driver.resume_after_kexec(SystemClock().now())
    await host.serve()
    watching = asyncio.create_task(host.luoctl("update", "watch"))
    await until(lambda: len(host.luod.facade.hub) == 1)
    vmm2 = host.luod.connections.of("vm1") or FakeVmm()
    assert isinstance(vmm2, FakeVmm)  # the harness's connections
    assert (await host.luod.ask(vmm2, {"cmd": "RECLAIM", "id": "vm1"}))["ok"]
    assert (await host.luod.ask(vmm2, {"cmd": "DONE", "id": "vm1"}))["ok"]
    after = await watching
    assert after.code == 0, after.err
    assert "phase reclaiming" in after.out and "vm1: reclaimed" in after.out
    assert "completed" in after.out and "blackout per VM:" in after.out
    assert "longest" in after.out
    # where it went: every step luod stamped, across the simulated kexec
    lines = after.out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["VM", "BLACKOUT"])
    assert lines[head].split()[2:] == ["WAIT", "KEXEC*", "BOOT", "START", "LUOD", "RECLAIM",
                                       "RESTORE"]  # fmt: skip
    row = lines[head + 1].split()
    assert row[0] == "vm1" and row[2::2] == ["s"] * 8  # luod_exec: this process's start
    assert any(line.split()[0] == "restore" for line in lines[head + 3 :])
    shown = await host.luoctl("update", "show")  # the same split; status keeps the totals
    assert shown.code == 0 and "KEXEC*" in shown.out and "vm1" in shown.out
    status = await host.luoctl("status")
    assert status.code == 0 and "blackout per VM:" in status.out and "KEXEC*" not in status.out


async def test_luod_unreachable_is_exit_5(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        main, ["--socket", str(tmp_path / "none.sock"), "status"], out=out, err=err
    )
    assert code == 5 and "cannot reach luod" in err.getvalue() and "hint:" in err.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["preflight", "--reuse-cmdline"],
        ["preflight", "--kernel", "k", "--cmdline", "ro", "--reuse-cmdline"],
        ["preflight", "--kernel", "k"],
        ["update", "start", "--kernel", "k", "--reuse-cmdline", "--deadline", "freezing"],
        ["update", "start", "--kernel", "k", "--reuse-cmdline", "--deadline", "freezing=soon"],
        ["update"],
        ["frobnicate"],
    ],
)
def test_usage_errors_are_exit_2(argv: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv, out=io.StringIO(), err=err) == 2
    assert "usage: luoctl" in err.getvalue()


def test_help_documents_the_exit_codes() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--help"]) == 0
    assert "exit status:" in out.getvalue()
    for line in ("  3  refused by the preflight", "  4  the update was aborted", "  5  luod is"):
        assert line in out.getvalue()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_knows_the_commands(shell: str) -> None:
    out = io.StringIO()
    assert main(["completion", shell], out=out) == 0
    for word in ("luoctl", "preflight", "--reuse-cmdline", "watch", "wait", "--force"):
        assert word in out.getvalue()
    # VM ids come from the running luod: `luoctl vms --ids`, wired to the VM id argument
    assert "_shtab_luoctl_vm_ids()" in out.getvalue() and "luoctl vms --ids" in out.getvalue()
    assert out.getvalue().count("_shtab_luoctl_vm_ids") >= 2  # defined, and used for vm


async def test_vms_ids_are_what_completion_reads(host: Host) -> None:
    ran = await host.luoctl("vms", "--ids")
    assert (ran.code, ran.out) == (0, "vm1\n")


async def test_over_tcp_with_a_token_file(tmp_path: Path) -> None:
    host = Host(tmp_path / "luod")
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    await host.serve(tcp=("127.0.0.1", 0), token_file=token)
    try:
        assert host.endpoints is not None and host.endpoints.tcp is not None
        url = f"http://127.0.0.1:{host.endpoints.tcp[1]}"
        ok = await host.luoctl("--url", url, "--token-file", str(token), "status")
        assert ok.code == 0
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-token-0123456789")
        refused = await host.luoctl("--url", url, "--token-file", str(wrong), "status")
        assert refused.code == 1 and "[unauthorized]" in refused.err
        tokenless = await host.luoctl("--url", url, "status")
        assert tokenless.code == 1 and "[unauthorized]" in tokenless.err
        assert "hint: over TCP luod wants its bearer token: pass --token-file" in tokenless.err
        missing = await host.luoctl("--url", url, "--token-file", str(tmp_path / "no"), "vms")
        assert missing.code == 2 and "cannot read the token file" in missing.err
    finally:
        await host.stop()
        host.luod.close()


async def test_an_injected_client_is_used_instead_of_connecting(host: Host) -> None:
    out = io.StringIO()
    transport = httpx.HTTPTransport(uds=str(host.socket))
    client = httpx.Client(transport=transport, base_url="http://injected")
    argv = ["--socket", "/nonexistent", "history", "--json"]
    assert await asyncio.to_thread(main, argv, http=client, out=out) == 0
    assert json.loads(out.getvalue()) == {"history": []}


def test_times_are_shown_in_local_time_from_rfc3339() -> None:
    moment = "2031-05-01T12:00:00.250000Z"
    local = time.localtime(1935403200.25)
    assert render.clock(moment) == time.strftime("%H:%M:%S", local) + ".250"
    assert render.local_time(moment) == time.strftime("%Y-%m-%d %H:%M:%S", local)
    assert render.local_time(None) == "-"


def test_the_blackout_summary_says_when_the_uplink_came_back() -> None:
    record: dict[str, Any] = {
        "blackout_seconds": {"vm1": 4.5},
        "request": {"uplink": "eth0"},
        "events": {
            "kernel_boot": "2031-05-01T12:00:00Z",
            "uplink_up": "2031-05-01T12:00:02.250000Z",
        },
    }
    lines = render.blackout(record)
    assert lines[-1] == "host uplink eth0 up 2.250 s after the new kernel booted"
    del record["events"]["uplink_up"]  # not measured: no line rather than a guess
    assert not any("uplink" in line for line in render.blackout(record))


def test_preflight_messages_start_past_the_longest_check_id() -> None:
    """`vmm-connected` (13 characters) ran into its message ("vmm-connectedevery VM's...")."""
    doc = {
        "ok": False,
        "checks": [
            {"id": "kho", "status": "pass", "message": "kexec handover (KHO) is on"},
            {"id": "vmm-connected", "status": "warn", "message": "gone", "hint": "start it"},
        ],
    }
    lines = render.checks(doc)
    assert lines[0] == "ok    kho           kexec handover (KHO) is on"
    assert lines[1] == "WARN  vmm-connected gone"
    assert lines[2] == "                    hint: start it"
    assert lines[3] == "preflight REFUSES this update"


def _answered(status: int, code: str) -> httpx.Client:
    """A client whose every request gets this problem document, as luod's REST worker sends."""
    problem = {"status": status, "code": code, "detail": "luod closed the link", "hint": "wait"}
    transport = httpx.MockTransport(lambda _: httpx.Response(status, json=problem))
    return httpx.Client(transport=transport, base_url="http://luod")


async def test_a_503_rest_link_is_luod_unreachable_exit_5() -> None:
    """luod stops (the kexec, a restart) while its REST worker still answers: as unreachable."""
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        main, ["status"], http=_answered(503, "rest-link"), out=out, err=err
    )
    assert (
        code == 5
        and "cannot reach luod" in err.getvalue()
        and "luod closed the link" in (err.getvalue())
    )
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        main, ["status"], http=_answered(503, "custody-unavailable"), out=out, err=err
    )
    assert code == 1 and "custody-unavailable" in err.getvalue()  # luod's own refusal
