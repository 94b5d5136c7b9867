"""Fuzz target: the REST API of a running luod (``luod --simulate`` in a subprocess, served on
TCP with a bearer token), by schemathesis, stateful: hypothesis drives a state machine whose
steps are the API's operations, chained by links added to luod's own OpenAPI document
(a VM listed is then fetched, an update started is then read, aborted or cancelled, a history
page's cursor is followed). Requests are valid and invalid (schemathesis' positive and negative
modes), with and without the token.

One input is one HTTP request. A 5xx or an answer that does not conform to the document is a
crash (counted by check and operation; the run goes on); no answer within ``TIMEOUT`` is a hang.
Three VMs, registered and preserved over the VMM socket beforehand, give the API something to
show. The outcome checks are the socket target's (tests.fuzz.luod_process).

``python -m tests.fuzz.rest_target --inputs 100000``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import FlakyStrategyDefinition
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from luod.kernel import memfd
from luod.vmm.client import Client
from tests.fuzz import luod_process
from tests.fuzz.outcome import SUMMARY, Outcome

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
STEPS = 20  # steps (requests) per state machine run
CHECKS: list[Any] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
LINKS = {  # (operation path, method, status) -> links
    ("/v1/vms", "get", "200"): {
        "getVm": {"operationId": "getVm", "parameters": {"vm_id": "$response.body#/vms/0/id"}}
    },
    ("/v1/history", "get", "200"): {
        "nextPage": {
            "operationId": "getHistory",
            "parameters": {"cursor": "$response.body#/next_cursor"},
        }
    },
    ("/v1/update", "post", "202"): {
        "read": {"operationId": "getUpdate"},
        "abort": {"operationId": "abortUpdate"},
        "cancel": {"operationId": "cancelUpdate"},
    },
    ("/v1/update", "get", "200"): {"abort": {"operationId": "abortUpdate"}},
}


def document() -> dict[str, Any]:
    """luod's OpenAPI document with the links the state machine walks."""
    raw: dict[str, Any] = copy.deepcopy(json.loads((REPO / "api" / "openapi.json").read_text()))
    for (path, method, status), links in LINKS.items():
        raw["paths"][path][method]["responses"][status]["links"] = links
    return raw


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def machine(base_url: str, token: str, outcome: Outcome) -> type:
    schema = schemathesis.openapi.from_dict(document())
    schema.config.update(base_url=base_url, headers={"Authorization": f"Bearer {token}"})
    schema.config.update(request_timeout=TIMEOUT)
    schema.config.generation.update(modes=list(GenerationMode))
    schema.config.max_stream_events = 1  # the event stream never ends: its first event
    base: Any = schema.as_state_machine()

    class Workflow(base):  # type: ignore[misc]
        def validate_response(self, response: Any, case: Any, **_: Any) -> None:
            outcome.inputs += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:
                label = f"{case.method} {case.path} -> {response.status_code}"
                signature = f"{type(exc).__name__}: {label}"
                outcome.crash(exc, _request(case), None, signature)

    return Workflow


def _request(case: Any) -> bytes:
    return json.dumps(
        {
            "method": case.method,
            "path": case.formatted_path,
            "query": case.query,
            "body": case.body,
        },
        default=repr,
    ).encode()


def seed_vms(daemon: Any) -> None:
    with Client(daemon.socket, timeout=10) as vmm:
        for vm in ("fuzz-a", "fuzz-b", "fuzz-c"):
            vmm.register(vm)
            with memfd.create("ram0", 1 << 20) as ram:
                vmm.preserve(vm, {"ram0": ram})


def run(inputs: int, scratch: Path) -> Outcome:
    outcome = Outcome("rest")
    token = secrets.token_urlsafe(32)
    token_file = scratch / "token"
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    port = free_port()
    daemon = luod_process.start(
        scratch / "luod",
        "--api-tcp",
        f"127.0.0.1:{port}",
        "--api-token-file",
        str(token_file),
        api=True,
    )
    try:
        _wait_for_api(port)
        before = luod_process.baseline(daemon)  # the seeded VMs are dropped by finish
        seed_vms(daemon)
        workflow = machine(f"http://127.0.0.1:{port}", token, outcome)
        flaky = 0
        while outcome.inputs < inputs:
            examples = max(1, (inputs - outcome.inputs) // STEPS)
            try:
                run_state_machine_as_test(
                    workflow,
                    settings=settings(
                        max_examples=min(examples, 500),
                        stateful_step_count=STEPS,
                        deadline=None,
                        database=None,
                        suppress_health_check=list(HealthCheck),
                    ),
                )
            except requests.Timeout as exc:
                outcome.hangs += 1
                outcome.notes.append(f"hang at input {outcome.inputs}: {exc}"[:300])
            except FlakyStrategyDefinition:  # luod's state moved under a replayed example
                flaky += 1
        if flaky:
            outcome.notes.append(f"{flaky} state machine runs cut short: luod's state moved")
        luod_process.finish(daemon, outcome, before)
    finally:
        luod_process.stop(daemon)
    return outcome.finish()


def _wait_for_api(port: int) -> None:
    for _ in range(200):
        try:
            requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("luod's REST API did not start")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # luod is stopped on the way out
    scratch = Path(tempfile.mkdtemp(prefix="luod-fuzz-rest-", dir=luod_process.scratch_dir()))
    print(SUMMARY + run(args.inputs, scratch).to_json(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
