"""VM ids of the QEMU canary's form (``luodq-*``) are luod's: a VMM gets ``reserved-id`` for
them, with a hint, unless it is the running qualification's canary. A killed luod's luod-qemu
took its canary VM again after the restarted luod had dropped it (issue 13's one policy:
nothing of luod's own is a VMM's to take)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.rest.harness import FakeVmm, Luod


@pytest.mark.parametrize("cmd", ["REGISTER", "SUBSCRIBE"])
def test_a_canary_id_is_refused_outside_its_qualification(tmp_path: Path, cmd: str) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path / "luod")
        vmm = FakeVmm()
        refused = await luod.ask(vmm, {"cmd": cmd, "id": "luodq-0123456789ab"})
        assert not refused["ok"] and refused["error"]["code"] == "reserved-id", refused
        assert "luodq-" in refused["error"]["hint"]
        assert "luodq-0123456789ab" not in luod.registry.vms
        assert (await luod.ask(vmm, {"cmd": cmd, "id": "luodq0-mine"}))["ok"]  # not the form
        luod.close()

    asyncio.run(scenario())


def test_the_running_qualifications_canary_may_register(tmp_path: Path) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path / "luod")
        qualifications = luod.daemon.qualifications
        qualifications.record = {"id": "0123456789ab", "outcome": "running",
                                 "request": {"qemu_canary": True}}  # fmt: skip
        assert qualifications.reserved_id("luodq-0123456789ab") == ""
        assert qualifications.reserved_id("luodq-ffffffffffff") != ""
        reply = await luod.ask(FakeVmm(), {"cmd": "REGISTER", "id": "luodq-0123456789ab"})
        assert reply["ok"], reply
        qualifications.record["outcome"] = "failed"
        assert qualifications.reserved_id("luodq-0123456789ab") != ""
        luod.close()

    asyncio.run(scenario())
