"""Property-based: schemathesis drives every operation of the app's own OpenAPI document with
generated requests (bounded, deterministic) over the real facade on the simulator, and checks
that luod never answers 5xx and that every answer conforms to the document."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from luod.rest.app import create_app
from tests.rest.harness import Luod

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiCase  # Case[an OpenAPI operation]

pytestmark = pytest.mark.unit
STATE = Path(tempfile.mkdtemp(prefix="luod-schemathesis-"))
LUOD = Luod(STATE)
APP = create_app(LUOD.facade, keepalive=0.05)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.max_stream_events = 1  # the event stream never ends: check its first event
CHECKS: list[Any] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    LUOD.close()
    shutil.rmtree(STATE, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_5xx_and_every_answer_conforms(case: OpenApiCase) -> None:
    case.call_and_validate(checks=CHECKS)
