"""The link between luod and its REST worker (luod.rest.link): the frames, the calls both ways
over a real socket pair, errors as the REST side will raise them, and the order of a read's
answer against the events around it, which the event stream's consistency rests on."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest
import uvloop

from luod.errors import LuodError
from luod.rest import link

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


def test_frames_round_trip_and_nonsense_is_refused() -> None:
    message = {"id": 3, "ok": {"phase": "idle", "vms": ["vm1"]}}
    assert link.decode(link.encode(message)) == message
    assert link.encode(message).count(b"\n") == 1
    for bad in (b"not json\n", b"[1, 2]\n", b"\xff\xfe\n"):
        with pytest.raises(link.LinkBroken) as caught:
            link.decode(bad)
        assert caught.value.code == "rest-link" and caught.value.hint


def test_errors_cross_with_their_code_hint_errno_and_checks() -> None:
    plain = LuodError("unknown-vm", "no VM vm9", "luoctl vms lists them", 2)
    back = link.raised(link.error_of(plain))
    assert type(back) is LuodError
    assert (back.code, back.message, back.hint, back.errno) == (
        "unknown-vm",
        "no VM vm9",
        plain.hint,
        2,
    )
    checks = [{"name": "kexec-loaded", "verdict": "FAIL"}]
    refused = link.Refused(LuodError("preflight-failed", "1 check failed", "fix it"), checks)
    again = link.raised(link.error_of(refused))
    assert isinstance(again, link.Refused) and again.checks == checks
    assert again.code == "preflight-failed"


class Port:
    """A stand-in for DaemonPort: a read that publishes an event right after it answers."""

    def __init__(self) -> None:
        self.server: link.LinkServer | None = None
        self.phase = "idle"

    def read(self, name: str) -> dict[str, Any]:
        if name != "update":
            raise LuodError("unknown-call", f"no read {name}", "")
        return {"phase": self.phase}

    def vm(self, vm_id: str) -> dict[str, Any]:
        raise LuodError("unknown-vm", f"no VM {vm_id}", "list them")

    async def abort(self, reason: str | None, uid: int | None) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"reason": reason, "uid": uid}

    def drop_vm(self, vm_id: str, force: bool, uid: int | None) -> dict[str, Any]:
        raise RuntimeError("a bug in luod")

    def qualifications(self) -> Any:
        return {"not JSON": object()}  # a bug in luod's answer


async def linked(port: Port, on_event: Any) -> tuple[link.LinkServer, link.LinkClient, Any]:
    ours, theirs = socket.socketpair()
    server_reader, server_writer = await asyncio.open_unix_connection(sock=ours)
    client_reader, client_writer = await asyncio.open_unix_connection(sock=theirs)
    calls = frozenset({"vm", "abort", "drop_vm", "qualifications"})
    server = link.LinkServer(server_writer, port, calls)
    client = link.LinkClient(client_reader, client_writer, on_event)
    tasks = (asyncio.create_task(server.serve(server_reader)), asyncio.create_task(client.run()))
    return server, client, (tasks, server_writer, client_writer)


async def test_calls_answer_and_fail_as_luod_said() -> None:
    port = Port()
    _server, client, (tasks, server_writer, client_writer) = await linked(port, lambda _: None)
    assert await client.call("read", "update") == {"phase": "idle"}
    assert await client.call("abort", "why", 0) == {"reason": "why", "uid": 0}
    with pytest.raises(LuodError) as unknown_vm:
        await client.call("vm", "vm9")
    assert unknown_vm.value.code == "unknown-vm" and unknown_vm.value.hint == "list them"
    with pytest.raises(LuodError) as not_offered:
        await client.call("shutdown")
    assert not_offered.value.code == "unknown-call"
    with pytest.raises(LuodError) as bug:
        await client.call("drop_vm", "vm1", False, 0)
    assert bug.value.code == "internal" and "a bug in luod" in bug.value.message
    with pytest.raises(LuodError) as unencodable:
        await client.call("qualifications")
    assert unencodable.value.code == "internal"
    assert await client.call("read", "update") == {"phase": "idle"}  # the link survived
    server_writer.close()
    await asyncio.wait_for(tasks[1], 5)
    with pytest.raises(link.LinkBroken):
        await client.call("read", "update")
    client_writer.close()
    await asyncio.wait_for(tasks[0], 5)


async def test_a_watch_answers_after_every_earlier_event_and_before_any_later_one() -> None:
    """The state a ``watch`` answers and the events the worker gets fit together: its
    ``then`` sees every event published before the answer and none after it."""
    seen: list[str] = []
    port = Port()
    server, client, (tasks, server_writer, client_writer) = await linked(
        port, lambda event, _: seen.append(event["step"])
    )
    server.event({"event": "PHASE", "step": "before"})
    original = port.read

    def read_then_publish(name: str) -> dict[str, Any]:
        answer = original(name)  # luod's next step publishes an event: after the answer
        asyncio.get_running_loop().call_soon(
            server.event, {"event": "VM_PROGRESS", "step": "after"}
        )
        return answer

    port.read = read_then_publish  # type: ignore[method-assign]
    answered = await client.call("watch", then=lambda found: (found, list(seen)))
    found, events_then = answered
    assert found == {"state": {"phase": "idle"}, "watches": 1} and events_then == ["before"]
    await asyncio.sleep(0.05)
    assert seen == ["before", "after"]
    server_writer.close()
    client_writer.close()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_vms_progress_crosses_only_while_someone_watches() -> None:
    """Unwatched, luod sends the events the worker's snapshots need (PHASE, UPDATE_END,
    SHUTDOWN), not each VM's progress, and the numbers say how many it left out; an
    ``unwatch`` that a later ``watch`` overtook changes nothing."""
    seen: list[tuple[str, int | None]] = []
    server, client, (tasks, server_writer, client_writer) = await linked(
        Port(), lambda event, seq: seen.append((event["event"], seq))
    )

    async def publish(*kinds: str) -> None:
        for kind in kinds:
            server.event({"event": kind})
        await client.call("read", "update")  # everything before it has arrived

    await publish("PHASE", "VM_PROGRESS", "VM_PROGRESS", "PHASE")
    assert seen == [("PHASE", 1), ("PHASE", 4)]
    first = await client.call("watch")
    await publish("VM_PROGRESS")
    assert seen[-1] == ("VM_PROGRESS", 5)
    second = await client.call("watch")
    assert (first["watches"], second["watches"]) == (1, 2)
    assert await client.call("unwatch", first["watches"]) is False  # overtaken: still on
    await publish("VM_PROGRESS")
    assert seen[-1] == ("VM_PROGRESS", 6)
    assert await client.call("unwatch", second["watches"]) is True
    await publish("VM_PROGRESS", "UPDATE_END")
    assert seen[-1] == ("UPDATE_END", 8) and ("VM_PROGRESS", 7) not in seen
    server_writer.close()
    client_writer.close()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_call_waiting_when_luod_goes_fails_with_rest_link() -> None:
    class Slow(Port):
        async def abort(self, reason: str | None, uid: int | None) -> dict[str, Any]:
            await asyncio.sleep(30)
            return {}

    _server, client, (tasks, server_writer, client_writer) = await linked(Slow(), lambda *_: None)
    waiting = asyncio.create_task(client.call("abort", None, 0))
    await asyncio.sleep(0.05)
    server_writer.close()
    with pytest.raises(link.LinkBroken) as caught:
        await asyncio.wait_for(waiting, 5)
    assert caught.value.code == "rest-link"
    client_writer.close()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_worker_that_sends_nonsense_breaks_the_link_not_luod() -> None:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    server = link.LinkServer(writer, Port(), frozenset())
    with theirs:
        theirs.sendall(b'{"call": "read"}\n')  # no id
        with pytest.raises(link.LinkBroken):
            await asyncio.wait_for(server.serve(reader), 5)
    writer.close()


async def test_events_wait_while_the_vms_are_paused_and_an_abort_sends_them_at_once() -> None:
    """From ``freezing`` to the kexec the worker is not woken for each event: luod holds them
    (HOLD at most, then a batch); leaving the pause (an abort) or a stop sends them at once."""
    seen: list[str] = []
    server, client, (tasks, server_writer, client_writer) = await linked(
        Port(), lambda event, _: seen.append(event.get("to") or event["event"])
    )
    await client.call("watch")
    server.event({"event": "PHASE", "to": "freezing"})
    server.event({"event": "VM_PROGRESS", "id": "vm1", "step": "freeze_ack"})
    await asyncio.sleep(link.HOLD / 5)
    assert seen == []
    await asyncio.sleep(link.HOLD * 2)
    assert seen == ["freezing", "VM_PROGRESS"]  # a long freeze still shows, in batches
    server.event({"event": "VM_PROGRESS", "id": "vm2", "step": "freeze_ack"})
    server.event({"event": "PHASE", "to": "aborting"})
    await asyncio.sleep(link.HOLD / 5)
    assert seen[2:] == ["VM_PROGRESS", "aborting"]
    server.event({"event": "PHASE", "to": "frozen"})
    server.event({"event": "SHUTDOWN"})
    await asyncio.sleep(link.HOLD / 5)
    assert seen[4:] == ["frozen", "SHUTDOWN"]
    server_writer.close()
    client_writer.close()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_a_call_after_the_link_closed_is_rest_link_not_a_bug() -> None:
    """luod's end closed, and a write to it closed the worker's transport, before the
    worker's reader has seen the end: a request that calls then gets ``rest-link`` (503, try
    again), not an internal error. On uvloop, the worker's loop, a write to a closed transport
    raises RuntimeError."""

    async def scenario() -> str:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        client = link.LinkClient(reader, writer, lambda *_: None)  # its reader not running
        ours.close()
        with contextlib.suppress(LuodError, TimeoutError):  # its write meets EPIPE: closed
            async with asyncio.timeout(0.2):
                await client.call("read", "status")
        try:
            async with asyncio.timeout(2):
                await client.call("read", "update")
        except LuodError as exc:
            return exc.code
        except (RuntimeError, TimeoutError) as exc:
            return repr(exc)
        finally:
            writer.close()
        return "answered"

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == "rest-link"
