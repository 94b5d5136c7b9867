"""Replies over 64 KiB (issue 13, finding 11): LIST and HISTORY page on the VMM socket, both
client shells follow the pages, and the history is rotated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.core import timeline
from luod.kernel import memfd
from luod.vmm import codec, fields
from luod.vmm.async_client import AsyncClient
from luod.vmm.client import Client
from tests.integration.conftest import Daemon, start_daemon
from tests.integration.test_vmm_bad_input import Raw, error_of

VMS = 1101  # the count that made LIST an internal error


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """luod holding 1,101 VMs of root's, and 300 update records of about 1 KiB each."""
    home = tmp_path_factory.mktemp("paging")
    config = home / "luod.toml"
    config.write_text("[limits]\nvms_per_uid = 2000\n")
    state = home / "luod"
    state.mkdir()
    records = [
        {"id": f"u{n:04}", "finished": 1.0, "outcome": "completed", "reason": "x" * 1000}
        for n in range(300)
    ]
    (state / timeline.HISTORY).write_text("".join(json.dumps(r) + "\n" for r in records))
    daemon = start_daemon(state, "--config", str(config))
    with Client(daemon.socket) as client:
        for n in range(VMS):
            client.register(f"vm{n:04}")
    yield daemon
    assert daemon.stop() == 0


def test_list_of_1101_vms_comes_in_pages_that_each_fit_a_frame(crowded: Daemon) -> None:
    raw = Raw(crowded.socket)
    first = raw.call({"cmd": "LIST"})
    assert first["ok"] and first["next"] == first["vms"][-1]["id"]
    assert len(json.dumps(first, separators=(",", ":"), ensure_ascii=True)) < codec.MAX_LINE
    second = raw.call({"cmd": "LIST", "after": first["next"], "limit": 5})
    assert [v["id"] for v in second["vms"]] == [
        f"vm{n:04}" for n in range(len(first["vms"]), len(first["vms"]) + 5)
    ]
    last = raw.call({"cmd": "LIST", "after": "vm1095"})
    assert [v["id"] for v in last["vms"]] == [f"vm{n}" for n in range(1096, 1101)]
    assert last["next"] is None
    raw.close()


def test_both_shells_follow_the_pages(crowded: Daemon) -> None:
    with Client(crowded.socket) as client:
        ids = [vm["id"] for vm in client.list()]
        history = client.history()

    async def from_async() -> tuple[list[str], int]:
        async with AsyncClient(crowded.socket) as client:
            return [vm["id"] for vm in await client.list()], len(await client.history())

    assert ids == [f"vm{n:04}" for n in range(VMS)]
    assert [r["id"] for r in history] == [f"u{n:04}" for n in range(300)]
    assert asyncio.run(from_async()) == (ids, 300)


def test_history_pages_and_an_unknown_cursor_is_refused(crowded: Daemon) -> None:
    raw = Raw(crowded.socket)
    first = raw.call({"cmd": "HISTORY", "limit": 10})
    assert [r["id"] for r in first["history"]] == [f"u{n:04}" for n in range(10)]
    assert first["next"] == "u0009"
    assert raw.call({"cmd": "HISTORY", "after": "u0298"})["history"][0]["id"] == "u0299"
    assert error_of(raw.call({"cmd": "HISTORY", "after": "gone"}))["code"] == "bad-request"
    raw.close()


@pytest.mark.parametrize(
    ("limit", "ok"), [(fields.MAX_PAGE, True), (fields.MAX_PAGE + 1, False), (0, False)]
)
def test_the_page_limit_at_its_bounds(crowded: Daemon, limit: int, ok: bool) -> None:
    raw = Raw(crowded.socket)
    reply = raw.call({"cmd": "LIST", "limit": limit})
    assert reply["ok"] is ok, reply
    raw.close()


def test_a_vm_at_the_files_limit_with_the_longest_names_still_lists(tmp_path: Path) -> None:
    """LIST of one VM with 1,280 files outgrew a frame; files_per_vm (256) keeps one VM's
    record within a page, even with 64-character names."""
    daemon = start_daemon(tmp_path / "luod")
    with Client(daemon.socket) as client, memfd.create("ram", 4096) as ram:
        client.register("full")
        for batch in range(256 // codec.MAX_FDS):
            names = [f"{batch}{n:02}".ljust(64, "x") for n in range(codec.MAX_FDS)]
            fds = [memfd.create("ram", 4096) for _ in names]
            client.preserve("full", dict(zip(names, fds, strict=True)))
            for fd in fds:
                fd.close()
        [vm] = client.list("full")
        assert len(vm["files"]) == 256
        with pytest.raises(Exception) as info:
            client.preserve("full", {"one-more": ram})
        assert getattr(info.value, "code", None) == "too-many-files"
    assert daemon.stop() == 0
