from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from luod.core import timeline
from tests.unit.test_core import World
from tests.unit.test_luoctl import Host


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit/" in str(item.path):
            item.add_marker(pytest.mark.unit)


# luoctl's tests (test_luoctl*.py): one luod on the simulator behind the REST app, one VM in it.
@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    running = Host(tmp_path / "luod")
    await running.serve()
    await running.luod.handover_vm("vm1", size=1 << 20)
    yield running
    await running.stop()
    running.luod.close()


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every history line parsed from now on (luod.core.timeline.parse_line), in order."""
    seen: list[bytes] = []
    parse = timeline.parse_line

    def counting(line: bytes) -> dict[str, object] | None:
        seen.append(line)
        return parse(line)

    monkeypatch.setattr(timeline, "parse_line", counting)
    return seen


# The core's tests (test_core.py and the tests that import its World): a registry on one boot of
# the simulated kernel, its state directory empty.
@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    state = tmp_path / "state"
    state.mkdir()
    booted = World.boot(tmp_path / "kernel", state)
    yield booted
    booted.power_off()
