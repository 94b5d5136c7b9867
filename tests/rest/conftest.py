"""REST tests: the app over a real DaemonFacade on the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from luod.rest.app import create_app
from tests.rest.harness import Luod


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def luod(tmp_path: Path) -> Iterator[Luod]:
    daemon = Luod(tmp_path / "luod")
    yield daemon
    daemon.close()


@pytest.fixture
async def client(luod: Luod) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(luod.facade))
    async with httpx.AsyncClient(transport=transport, base_url="http://luod") as http:
        yield http
