"""api/schemas and api/vmm-protocol.md agree with each other and with the codec.

Every example line of the spec (```wire blocks: ``C:`` client, ``S:`` luod, ``C!:`` a request
luod refuses, ``[+N fds]`` attached fds) validates against its schema with the right number of
fds, and passes through the codec; what the codec produces validates; what a schema accepts the
codec accepts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from luod.core import dialect, preflight, timeline
from luod.core.access import AccessPolicy, Peer
from luod.core.clock import FakeClock, SystemClock
from luod.core.orchestrator import DEADLINE_PHASES, Phase, Transition
from luod.daemon.daemon import Daemon
from luod.daemon.settings import Settings
from luod.daemon.update import UpdateRequest
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import codec, parse
from luod.vmm.codec import Frame
from tests.contract.harness import FAKE_BZIMAGE as FAKE
from tests.unit.test_vmm_codec import JSON, Sample, fd_pool, requests

pytestmark = pytest.mark.unit
API = Path(__file__).resolve().parents[2] / "api"
SCHEMAS = {path.name: json.loads(path.read_text()) for path in (API / "schemas").glob("*.json")}
REGISTRY = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()
)
EVENTS = (
    "START_PRESERVATION",
    "FREEZE",
    "RESUME",
    "RECLAIM_READY",
    "PHASE",
    "VM_PROGRESS",
    "UPDATE_END",
)


@dataclass(frozen=True)
class Example:
    where: str
    side: str  # "C" or "S"
    refused: bool
    text: str
    nfds: int

    @property
    def message(self) -> dict[str, Any]:
        data = json.loads(self.text)
        assert isinstance(data, dict)
        return data


def spec_examples() -> list[Example]:
    spec = (API / "vmm-protocol.md").read_text()
    examples = []
    for block in re.finditer(r"```wire\n(.*?)```", spec, re.DOTALL):
        first = spec.count("\n", 0, block.start(1)) + 1
        for offset, line in enumerate(block.group(1).splitlines()):
            match = re.fullmatch(r"(C|S)(!?): (.*?)(?:\s+\[\+(\d+) fds?\])?", line)
            assert match, f"vmm-protocol.md:{first + offset}: not an example line: {line!r}"
            side, refused, text, nfds = match.groups()
            where = f"vmm-protocol.md:{first + offset}"
            examples.append(Example(where, side, bool(refused), text, int(nfds or 0)))
    return examples


EXAMPLES = spec_examples()


def schema_name(message: dict[str, Any]) -> str:
    if "cmd" in message:
        return f"request-{str(message['cmd']).lower()}.json"
    if "event" in message:
        return f"event-{str(message['event']).lower().replace('_', '-')}.json"
    return "reply-ok.json" if message.get("ok") is True else "reply-error.json"


def expected_fds(name: str, message: dict[str, Any]) -> int:
    schema = SCHEMAS[name]
    if name == "reply-ok.json":
        schema = schema["$defs"].get(message["reply"], {})
    count = schema.get("x-fds", 0)
    return len(message.get("files", [])) if count == "files" else int(count)


def problems(message: dict[str, Any], nfds: int) -> list[str]:
    """Why ``message`` with ``nfds`` fds is not a valid frame (empty: it is)."""
    name = schema_name(message)
    if name not in SCHEMAS:
        return [f"no schema {name}"]
    validator = Draft202012Validator(SCHEMAS[name], registry=REGISTRY)
    found = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(message)]
    if not found and nfds != expected_fds(name, message):
        found.append(f"{nfds} fds, {name} says {expected_fds(name, message)}")
    return found


# --- the schemas and the spec ---------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    Draft202012Validator.check_schema(SCHEMAS[name])
    assert SCHEMAS[name]["$id"].endswith("/" + name)


def test_every_verb_and_event_has_a_schema_and_spec_examples() -> None:
    verbs = set(codec.COMMAND_OF.values())
    assert {f"request-{v.lower()}.json" for v in verbs} <= set(SCHEMAS)
    assert set(SCHEMAS["reply-ok.json"]["$defs"]) == verbs
    shown = {schema_name(e.message) for e in EXAMPLES if e.text.startswith("{") and _json(e)}
    messages = {n for n in SCHEMAS if n != "common.json"}
    assert messages <= shown, f"no example for {sorted(messages - shown)}"
    assert {f"event-{e.lower().replace('_', '-')}.json" for e in EVENTS} <= shown


def test_the_spec_and_the_schema_list_the_same_error_codes() -> None:
    spec = (API / "vmm-protocol.md").read_text()
    table = spec.split("## 6. Error codes")[1].split("## 7.")[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    in_spec = {code for row in rows for code in re.findall(r"`([a-z0-9<>-]+)`", row)}
    listed = set(SCHEMAS["common.json"]["$defs"]["errorCode"]["examples"])
    assert in_spec - {"luo-<errno>"} == {c for c in listed if not c.startswith("luo-")}


def test_the_schemas_name_the_phases_deadlines_and_check_states_of_the_code() -> None:
    common = SCHEMAS["common.json"]["$defs"]
    assert common["phase"]["examples"] == [str(p) for p in Phase]
    assert common["deadlinePhase"]["enum"] == list(DEADLINE_PHASES)
    assert common["check"]["properties"]["status"]["enum"] == [str(s) for s in preflight.Status]
    record = common["updateRecord"]
    assert set(record["required"]) == set(timeline.UpdateRecord().to_dict())
    assert set(record["properties"]["request"]["required"]) == set(UpdateRequest(Path()).to_dict())


def _json(example: Example) -> bool:
    try:
        return isinstance(json.loads(example.text), dict)
    except ValueError:
        return False


@pytest.mark.parametrize("example", [e for e in EXAMPLES if not e.refused], ids=lambda e: e.where)
def test_spec_example_is_valid(example: Example) -> None:
    message = example.message
    assert problems(message, example.nfds) == []
    with fd_pool() as pool:
        frame = Frame(example.text.encode(), tuple(pool.take(example.nfds)))
        if example.side == "C":
            assert parse.decode_request(frame).cmd == message["cmd"].upper()
        else:
            assert codec.decode_server_message(frame) == message
            assert rebuilt_by_codec(message) == message


def rebuilt_by_codec(message: dict[str, Any]) -> dict[str, Any]:
    """The same message as luod's codec would build it (checks errno_name, envelope keys)."""
    if "event" in message:
        name, fields = message["event"], {k: v for k, v in message.items() if k != "event"}
        return codec.event(name, **fields)
    rest = {k: v for k, v in message.items() if k not in ("reply", "ok", "seq", "error")}
    if message["ok"]:
        return codec.ok_reply(message["reply"], message.get("seq"), rest)
    error = message["error"]
    cmd = None if message["reply"] == "?" else message["reply"]
    exc = LuodError(error["code"], error["message"], error["hint"], error.get("errno"))
    return {**codec.error_reply(cmd, message.get("seq"), exc), **rest}


def refusals() -> list[tuple[Example, Example]]:
    return [(asked, answer) for asked, answer in pairwise(EXAMPLES) if asked.refused]


@pytest.mark.parametrize(("asked", "answer"), refusals(), ids=lambda e: e.where)
def test_spec_refused_example_is_refused_by_schema_and_codec(
    asked: Example, answer: Example
) -> None:
    expected = answer.message
    if _json(asked) and schema_name(asked.message) in SCHEMAS:
        assert problems(asked.message, asked.nfds)
    with fd_pool() as pool, pytest.raises(LuodError) as caught:
        parse.decode_request(Frame(asked.text.encode(), tuple(pool.take(asked.nfds))))
    exc = caught.value
    assert exc.code == expected["error"]["code"]
    reply = codec.error_reply(exc.cmd, exc.seq, exc)
    assert (reply["reply"], reply.get("seq")) == (expected["reply"], expected.get("seq"))
    assert problems(reply, 0) == []


# --- what the codec produces and accepts ----------------------------------------------------
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=requests())
def test_every_request_the_codec_accepts_in_its_tests_is_schema_valid(sample: Sample) -> None:
    assert problems(sample.message, sample.nfds) == []


BAD_REQUESTS = [
    ({"cmd": "REGISTER", "id": "vm/1"}, 0, "bad-id"),
    ({"cmd": "REGISTER", "id": "x" * 59}, 0, "bad-id"),
    ({"cmd": "REGISTER"}, 0, "bad-id"),
    ({"cmd": "LIST", "id": 7}, 0, "bad-id"),
    ({"cmd": "PRESERVE", "id": "vm1", "files": []}, 0, "bad-request"),
    ({"cmd": "PRESERVE", "id": "vm1", "files": ["a", "a"]}, 2, "bad-request"),
    ({"cmd": "PRESERVE", "id": "vm1", "files": [{"name": "a", "kind": "hugetlb"}]}, 1, None),
    ({"cmd": "PRESERVE", "id": "vm1", "files": [{"kind": "memfd"}]}, 1, "bad-name"),
    ({"cmd": "PRESERVE", "id": "vm1", "files": [".hidden"]}, 1, "bad-name"),
    ({"cmd": "PRESERVE", "id": "vm1", "files": [3]}, 1, "bad-request"),
    ({"cmd": "PRESERVE", "id": "vm1", "files": [f"f{i}" for i in range(65)]}, 0, "bad-request"),
    ({"cmd": "RECLAIM", "id": "vm1", "files": ["ok", "not ok"]}, 0, "bad-name"),
    ({"cmd": "RECLAIM", "id": "vm1", "files": "ram0"}, 0, "bad-request"),
    ({"cmd": "HELLO", "version": "1"}, 0, "bad-request"),
    ({"cmd": "HELLO", "version": True}, 0, "bad-request"),
    ({"cmd": "HELLO", "capabilities": "freeze"}, 0, "bad-request"),
    ({"cmd": "HELLO", "capabilities": ["Freeze"]}, 0, "bad-request"),
    ({"cmd": "HELLO", "capabilities": [1]}, 0, "bad-request"),
    ({"cmd": "HELLO", "capabilities": ["x"] * 65}, 0, "bad-request"),
    ({"cmd": "READY", "error": 5}, 0, "bad-request"),
    ({"cmd": "READY", "error": "nul\0inside"}, 0, "bad-request"),
    ({"cmd": "KEXEC"}, 0, "bad-request"),
    ({"cmd": "KEXEC", "kernel": ""}, 0, "bad-request"),
    ({"cmd": "KEXEC", "kernel": "/boot/vmlinuz", "cmdline": "x" * 4097}, 0, "bad-request"),
    ({"cmd": "UPDATE"}, 0, "bad-request"),
    ({"cmd": "UPDATE", "kernel": "/k", "deadlines": {"rebooting": 5}}, 0, "bad-request"),
    ({"cmd": "UPDATE", "kernel": "/k", "deadlines": {"freezing": 0}}, 0, "bad-request"),
    ({"cmd": "UPDATE", "kernel": "/k", "deadlines": {"freezing": -1.5}}, 0, "bad-request"),
    ({"cmd": "UPDATE", "kernel": "/k", "deadlines": {"freezing": True}}, 0, "bad-request"),
    ({"cmd": "UPDATE", "kernel": "/k", "deadlines": {"freezing": "5"}}, 0, "bad-request"),
    ({"cmd": "UPDATE", "kernel": "/k", "deadlines": [5]}, 0, "bad-request"),
    ({"cmd": "UPDATE", "kernel": "/k", "initrd": 7}, 0, "bad-request"),
    ({"cmd": "ABORT", "reason": "x" * 513}, 0, "bad-request"),
    ({"cmd": "ABORT", "reason": 3}, 0, "bad-request"),
    ({"cmd": "WATCH"}, 1, "unexpected-fds"),
    ({"cmd": "STATUS"}, 1, "unexpected-fds"),
    ({"cmd": "CLAIM", "id": "vm1"}, 1, "unexpected-fds"),
    ({"cmd": "PRESERVE", "id": "vm1", "files": ["a", "b"]}, 1, "fd-count-mismatch"),
]


@pytest.mark.parametrize(("message", "nfds", "code"), BAD_REQUESTS)
def test_bad_requests_are_refused_by_schema_and_codec(
    message: dict[str, Any], nfds: int, code: str | None
) -> None:
    assert problems(message, nfds)
    with fd_pool() as pool, pytest.raises(LuodError) as caught:
        parse.decode_request(Frame(json.dumps(message).encode(), tuple(pool.take(nfds))))
    assert caught.value.code == (code or "bad-request")
    reply = codec.error_reply(caught.value.cmd, caught.value.seq, caught.value)
    assert problems(reply, 0) == []


def _mutations() -> st.SearchStrategy[tuple[Sample, str, Any]]:
    # No strings ending in a newline: Python's re lets "$" match before one, ECMA-262 does not.
    texts = st.text(max_size=8).filter(lambda t: not t.endswith("\n"))
    floats = st.floats(allow_nan=False).filter(lambda f: not f.is_integer())  # "1.0" is integral
    scalars = st.none() | st.booleans() | st.integers(-3, 70) | floats | texts
    values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner)
    )
    keys = st.sampled_from(
        ["id", "files", "version", "capabilities", "force", "error", "kernel", "initrd"]
    ) | st.sampled_from(["cmdline", "deadlines", "dry_run", "wait", "reason"])
    return st.tuples(requests(), keys, values | JSON.filter(lambda v: not isinstance(v, float)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=_mutations())
def test_what_a_schema_accepts_the_codec_accepts(mutation: tuple[Sample, str, Any]) -> None:
    sample, key, value = mutation
    message = {**sample.message, key: value}
    nfds = len(value) if key == "files" and isinstance(value, list) else sample.nfds
    if problems(message, nfds):
        return
    with fd_pool() as pool:
        parse.decode_request(Frame(json.dumps(message).encode(), tuple(pool.take(nfds))))


def _record() -> timeline.UpdateRecord:
    clock = FakeClock()
    record = timeline.UpdateRecord(request=UpdateRequest(Path("/boot/vmlinuz")).to_dict())
    record.phase(TRANSITION.to_dict())
    record.vm_event("vm1", "freeze_ack", clock.now())
    record.vm_event("vm2", "freeze_ack", clock.now())
    clock.advance(3.5)
    record.vm_event("vm1", "done", clock.now())
    record.event("kernel_boot", timeline.kernel_boot_stamp(clock.now()))
    return record


TRANSITION = Transition(Phase.FREEZING, Phase.ABORTING, "deadline: no READY", FakeClock().now())
RECORD = _record()
CHECKS = [
    preflight.Check("kho", preflight.Status.PASS, "kexec handover (KHO) is on"),
    preflight.Check("next-cmdline", preflight.Status.FAIL, "no liveupdate=on", "add it"),
]


@pytest.mark.parametrize(
    "message",
    [
        codec.event("START_PRESERVATION", id="vm1", deadline_ms=599_997),
        codec.event("FREEZE", id="vm1", deadline_ms=5000),
        codec.event("RESUME", id="vm1", reason="abort requested"),
        codec.event("RECLAIM_READY", ids=["vm1", "vm2"]),
        codec.event("PHASE", **TRANSITION.to_dict()),
        codec.event("VM_PROGRESS", id="vm1", step="freeze_ack", note=""),
        codec.event("VM_PROGRESS", id="vm1", step="done"),
        codec.event("UPDATE_END", id=RECORD.id, outcome="completed", reason=""),
        codec.ok_reply("UPDATE", 3, {"update": RECORD.to_dict()}),
        codec.ok_reply("UPDATE", 3, {"dry_run": True, "checks": [c.to_dict() for c in CHECKS]}),
        codec.ok_reply("KEXEC", 4, {"update": RECORD.to_dict()}),
        codec.ok_reply("ABORT", 5, {"update": RECORD.to_dict()}),
        codec.ok_reply("WATCH", 6, {"phase": "idle", "update": None}),
        codec.ok_reply("WATCH", 6, {"phase": "reclaiming", "update": RECORD.to_dict()}),
        codec.ok_reply("HISTORY", 7, {"history": []}),
        codec.ok_reply("DROP", None),
        codec.ok_reply("HELLO", 1, {"protocol": codec.PROTOCOL, "version": codec.VERSION,
                                    "server": "luod 0.1.0", "capabilities": ["freeze"],
                                    "supported": sorted(dialect.ALL)}),
        codec.error_reply("PRESERVE", 2, LuodError("luo-ebusy", "busy", "already preserved", 16)),
    ],
)  # fmt: skip
def test_messages_luod_builds_are_valid(message: dict[str, Any]) -> None:
    fds = 1 if message.get("event") == "START_PRESERVATION" else 0
    assert problems(message, fds) == []


@pytest.mark.parametrize(
    "message",
    [
        codec.ok_reply("HELLO", 1, {"version": 1}),
        codec.ok_reply("LIST", 1, {"vms": [{"id": "vm1"}]}),
        codec.error_reply("PRESERVE", 2, LuodError("luo-ebusy", "busy", "no errno")),
        codec.error_reply("PRESERVE", 2, LuodError("Not A Code", "x", "")),
        codec.event("FREEZE", id="vm1"),
        codec.event("START_PRESERVATION", id="vm1"),
        codec.event("RESUME", id="vm1"),
        codec.event("PHASE", **{**TRANSITION.to_dict(), "at": 5.0}),
        codec.event("VM_PROGRESS", step="done"),
        codec.event("UPDATE_END", id=RECORD.id, outcome="completed"),
        codec.ok_reply("UPDATE", 3, {"dry_run": True}),
        codec.ok_reply("UPDATE", 3, {"checks": [c.to_dict() for c in CHECKS]}),
        codec.ok_reply("UPDATE", 3, {"update": {**RECORD.to_dict(), "blackout": None}}),
        codec.ok_reply("ABORT", 5, {"update": None}),
        codec.ok_reply("WATCH", 6, {"update": None}),
        codec.ok_reply("HISTORY", 7, {"history": [RECORD.to_dict()]}),  # no "finished"
    ],
)
def test_incomplete_server_messages_are_invalid(message: dict[str, Any]) -> None:
    assert problems(message, 0)


# --- what the daemon sends during whole updates (handler + driver over the simulator) -------
FAKE_BZIMAGE = FAKE  # a synthetic bzImage the simulator's kernel can update into


class FakeConnection:
    """Stands in for luod.vmm.server.Connection: keeps every frame pushed to it."""

    def __init__(self, uid: int = 0) -> None:
        self.peer = Peer(uid, uid, os.getpid())
        self.subscribed: set[str] = set()
        self.capabilities: frozenset[str] = frozenset()  # granted by HELLO
        self.closed = False
        self.frames: list[tuple[dict[str, Any], int]] = []

    def push(self, out: codec.Outgoing) -> None:
        for fd in out.fds:
            fd.close()
        self.frames.append((json.loads(out.line), len(out.fds)))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m, _ in self.frames if m.get("event") == name]


class Luod:
    """One boot's luod on the simulator in ``state``, built as the daemon builds itself
    (``Daemon.startup``), without its sockets."""

    def __init__(self, state: Path) -> None:
        settings = Settings.simulated(state, access=AccessPolicy.default())
        self.daemon = Daemon(settings)
        self.daemon.startup(asyncio.create_task)
        self.handler = self.daemon.handler
        self.registry = self.daemon.registry
        self.after_kexec = self.daemon.report.mode == "after-kexec"
        self.sent: list[tuple[dict[str, Any], int]] = []  # every reply of this luod

    @property
    def kexeced(self) -> bool:
        return self.daemon.kernel_gone

    async def ask(
        self, conn: FakeConnection, message: dict[str, Any], fds: tuple[OwnedFd, ...] = ()
    ) -> dict[str, Any]:
        frame = Frame(json.dumps(message).encode(), fds)
        try:
            request = parse.decode_request(frame)
            out = await self.handler.handle(conn, request)
        except LuodError as exc:
            out = codec.encode(codec.error_reply(exc.cmd, exc.seq, exc))
        for fd in out.fds:
            fd.close()
        reply: dict[str, Any] = json.loads(out.line)
        self.sent.append((reply, len(out.fds)))
        return reply

    def close(self) -> None:
        self.daemon.registry.close()
        self.daemon.shutdown()


async def _until(condition: Callable[[], object]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.002)


HELLO = {"cmd": "HELLO", "seq": 0, "version": 1, "capabilities": sorted(dialect.ALL)}


async def _whole_updates(state: Path) -> list[tuple[dict[str, Any], int]]:
    """Dry run, refusal, VMM refusal, deadline, ABORT, then KEXEC, reboot, reclaim, HISTORY."""
    image = state / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    luod = Luod(state)
    hand, dele, op = FakeConnection(), FakeConnection(), FakeConnection()
    for conn in (hand, dele, op):
        assert (await luod.ask(conn, HELLO))["capabilities"] == sorted(dialect.ALL)
    ram = OwnedFd(os.memfd_create("ram0"))
    os.ftruncate(ram.fileno(), 4096)
    await luod.ask(hand, {"cmd": "REGISTER", "id": "vm1"})
    await luod.ask(hand, {"cmd": "PRESERVE", "id": "vm1", "files": ["ram0"]}, (ram,))
    await luod.ask(dele, {"cmd": "SUBSCRIBE", "id": "vm2"})
    assert (await luod.ask(op, {"cmd": "WATCH", "seq": 1}))["update"] is None
    update = {"cmd": "UPDATE", "kernel": str(image)}
    assert (await luod.ask(op, {**update, "dry_run": True}))["dry_run"] is True
    refused = await luod.ask(op, {**update, "kernel": str(state / "none")})
    assert refused["error"]["code"] == "preflight-failed"

    async def prepared(attempt: int) -> None:  # answer START_PRESERVATION, wait for FREEZE
        await _until(lambda: len(dele.events("START_PRESERVATION")) > attempt)
        await luod.ask(dele, {"cmd": "READY"})
        await _until(lambda: len(hand.events("FREEZE")) > attempt)

    assert (await luod.ask(op, update))["update"]["outcome"] == "running"
    await prepared(0)
    await luod.ask(hand, {"cmd": "READY", "id": "vm1", "error": "cannot pause the vCPUs"})
    await _until(lambda: op.events("UPDATE_END")[-1]["outcome"] == "aborted")

    waiting = asyncio.create_task(
        luod.ask(op, {**update, "wait": True, "deadlines": {"freezing": 0.2}})
    )
    await prepared(1)
    assert (await waiting)["update"]["reason"].startswith("deadline")

    waiting = asyncio.create_task(
        luod.ask(op, {**update, "wait": True, "deadlines": {"freezing": 60}})
    )
    await prepared(2)
    assert (await luod.ask(op, {"cmd": "ABORT", "reason": "window closed"}))["ok"]
    await waiting
    assert (await luod.ask(op, {"cmd": "ABORT"}))["error"]["code"] == "wrong-state"

    waiting = asyncio.create_task(luod.ask(op, {"cmd": "KEXEC", "kernel": str(image)}))
    await prepared(3)
    await luod.ask(hand, {"cmd": "READY", "id": "vm1"})
    await luod.ask(dele, {"cmd": "READY", "id": "vm2"})
    await waiting
    assert luod.kexeced
    luod.close()
    sent = [*luod.sent, *hand.frames, *dele.frames, *op.frames]

    luod = Luod(state)  # the next kernel's luod
    assert luod.after_kexec
    luod.daemon.driver.resume_after_kexec(SystemClock().now())
    vmm, op = FakeConnection(), FakeConnection()
    for conn in (vmm, op):
        await luod.ask(conn, HELLO)
    assert (await luod.ask(op, {"cmd": "WATCH"}))["phase"] == "reclaiming"
    assert (await luod.ask(vmm, {"cmd": "DROP", "id": "vm1"}))["error"]["code"] == "wrong-state"
    await luod.ask(vmm, {"cmd": "RECLAIM", "id": "vm1"})
    await luod.ask(vmm, {"cmd": "CLAIM", "id": "vm2"})
    for vm in ("vm1", "vm2"):
        assert (await luod.ask(vmm, {"cmd": "DONE", "id": vm}))["ok"]
    await luod.ask(vmm, {"cmd": "STATUS"})
    history = (await luod.ask(op, {"cmd": "HISTORY"}))["history"]
    outcomes = ["refused", "aborted", "aborted", "aborted", "completed"]
    assert [h["outcome"] for h in history] == outcomes
    assert all(seconds is not None for seconds in history[-1]["blackout"].values())
    luod.close()
    return [*sent, *luod.sent, *vmm.frames, *op.frames]


def test_every_request_type_has_its_verb_in_the_handler_table(tmp_path: Path) -> None:
    luod = Luod(tmp_path)
    try:
        assert luod.handler.verbs.kinds() == frozenset(codec.COMMAND_OF)
    finally:
        luod.close()


def test_every_message_of_whole_updates_is_valid(tmp_path: Path) -> None:
    sent = asyncio.run(_whole_updates(tmp_path))
    for message, nfds in sent:
        assert problems(message, nfds) == [], message
    seen = {schema_name(m) for m, _ in sent} | {m["reply"] for m, _ in sent if m.get("ok")}
    update_verbs = {"UPDATE", "KEXEC", "ABORT", "WATCH", "HISTORY"}
    events = {f"event-{e.lower().replace('_', '-')}.json" for e in EVENTS if e != "RECLAIM_READY"}
    assert update_verbs | events <= seen
