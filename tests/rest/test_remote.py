"""The REST worker's facade (luod.rest.remote.RemoteFacade): reads from snapshots so that pollers
do not queue on luod's loop, fresh after a phase change or a mutation, and served stale rather
than hang when luod does not answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from luod.core.access import AccessPolicy
from luod.rest import models, problems, remote
from luod.rest.link import LinkBroken, LinkClient

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


class Luod:
    """Stands in for the link: answers ``read`` with a status of the current phase."""

    def __init__(self) -> None:
        self.phase = "idle"
        self.asked: list[str] = []
        self.hold: asyncio.Event | None = None  # set: luod's loop is blocked until it is
        self.watches = 0
        self.gone = False  # luod closed the link

    async def call(self, name: str, *args: Any, then: Callable[[Any], Any] | None = None) -> Any:
        self.asked.append(f"{name} {' '.join(map(str, args))}".strip())
        if self.hold is not None:
            await self.hold.wait()
        if self.gone:
            raise LinkBroken("luod closed the link")
        if name == "read" and args[0] == "status":
            answer: Any = status(self.phase)
        elif name == "abort":
            answer = {"update": None}
        elif name == "watch":
            self.watches += 1
            answer = {"state": {"phase": self.phase, "update": None}, "watches": self.watches}
        elif name == "unwatch":
            answer = args[0] == self.watches
        else:
            raise AssertionError(f"unexpected call {name}")
        return then(answer) if then else answer


def status(phase: str) -> dict[str, Any]:
    return {
        "host": "h", "kernel": "7.2.13", "luo_supported": True, "liveupdate_number": 0,
        "phase": phase, "vms": 0, "sessions": 0, "files": 0, "preserved_bytes": 0,
        "backend": "sim", "version": "0", "custody": {
            "kind": "memory", "healthy": True, "renewals": 0, "problem": ""},
    }  # fmt: skip


def facade(luod: Luod, tmp_path: Path) -> remote.RemoteFacade:
    link: LinkClient = luod  # type: ignore[assignment]
    return remote.RemoteFacade(link, AccessPolicy(), tmp_path)


async def test_pollers_share_one_answer_until_it_ages(tmp_path: Path) -> None:
    luod = Luod()
    rest = facade(luod, tmp_path)
    first = await rest.status()
    again = await rest.status()
    assert isinstance(first, models.Status) and again is first
    assert luod.asked == ["read status"]
    await asyncio.sleep(remote.MAX_AGE * 1.2)
    luod.phase = "prepared"
    assert (await rest.status()).phase == "prepared"
    assert luod.asked == ["read status", "read status"]


async def test_a_phase_change_or_a_mutation_makes_the_next_read_fresh(tmp_path: Path) -> None:
    luod = Luod()
    rest = facade(luod, tmp_path)
    await rest.status()
    luod.phase = "freezing"
    rest.publish({"event": "PHASE", "from": "prepared", "to": "freezing"})
    await asyncio.sleep(0)  # the status is asked for at once, before any poller
    assert luod.asked == ["read status", "read status"]
    assert (await rest.status()).phase == "freezing"
    rest.publish({"event": "VM_PROGRESS", "id": "vm1", "step": "freeze_ack"})  # not a change
    await rest.status()
    assert len(luod.asked) == 2
    await rest.abort(None, 0)
    luod.phase = "idle"
    assert (await rest.status()).phase == "idle"
    assert luod.asked[-2:] == ["abort None 0", "read status"]


async def test_a_blocked_luod_gets_the_last_snapshot_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "WAIT_LIMIT", 0.05)
    luod = Luod()
    rest = facade(luod, tmp_path)
    await rest.status()
    luod.hold = asyncio.Event()
    await asyncio.sleep(remote.MAX_AGE * 1.2)
    began = asyncio.get_running_loop().time()
    stale = await rest.status()
    assert stale.phase == "idle" and asyncio.get_running_loop().time() - began < 1
    luod.phase = "prepared"
    luod.hold.set()
    await asyncio.sleep(0.01)
    assert (await rest.status()).phase == "prepared"  # the refresh that was under way


async def test_a_gap_in_luods_numbers_ends_resuming_and_the_last_watcher_unwatches(
    tmp_path: Path,
) -> None:
    """Events luod left out while nobody watched (its numbers jump) cannot be replayed: a
    client reconnecting with an id from before them gets the state first. When the last
    subscriber leaves, the worker tells luod, naming the watch it last saw."""
    luod = Luod()
    rest = facade(luod, tmp_path)
    watch = await rest.watch()
    rest.publish({"event": "PHASE", "from": "idle", "to": "preparing"}, 1)
    rest.publish({"event": "VM_PROGRESS", "id": "vm1", "step": "preserve_ack"}, 2)
    first = await anext(watch.stream)
    await anext(watch.stream)
    resumed = await rest.watch(first[0])
    assert resumed.resumed  # everything after that id is held
    resumed.stream.close()
    watch.stream.close()
    await asyncio.sleep(0)
    assert luod.asked[-1] == "unwatch 2"
    rest.publish({"event": "PHASE", "from": "preparing", "to": "prepared"}, 5)  # 3, 4 left out
    again = await rest.watch(first[0])
    assert not again.resumed
    again.stream.close()


async def test_a_luod_that_is_gone_leaves_its_last_snapshot_and_otherwise_rest_link(
    tmp_path: Path,
) -> None:
    """luod closed the link (a kexec): a poller gets luod's last word rather than an error; a
    read the worker has nothing for fails with ``rest-link`` (503: try again)."""
    luod = Luod()
    rest = facade(luod, tmp_path)
    luod.phase = "rebooting"
    await rest.status()
    luod.gone = True
    rest.publish({"event": "PHASE", "from": "frozen", "to": "rebooting"})  # stale now
    assert (await rest.status()).phase == "rebooting"
    with pytest.raises(LinkBroken) as caught:
        await rest.abort(None, 0)
    assert caught.value.code == "rest-link"
    assert problems.KINDS["rest-link"].status == 503
