"""``DaemonFacade``: the REST facade (luod.rest.facade.RestFacade) over luod's port in the same
process: luod.rest.port_facade.PortFacade with a ``LocalCaller``. luod itself serves the REST API
from a worker process over the link (luod.rest.serving, luod.rest.worker); this in-process
facade serves the tests and benches that drive the app against a real daemon on the simulator.

Each answer crosses a JSON round trip, as it would across the link, so that a value the link
could not carry fails here too.

Events: ``publish(event)`` listens on the daemon's event bus (luod.daemon.events) and fans each
update event out to the REST subscribers (luod.rest.events) without ever blocking the update.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from luod.core.registry import Registry
from luod.daemon.update import UpdateDriver
from luod.rest.port import DaemonPort
from luod.rest.port_facade import PortFacade


class LocalCaller:
    """Implements luod.rest.port_facade.PortCaller on the port's own loop."""

    def __init__(self, port: DaemonPort) -> None:
        self.port = port

    async def call(self, name: str, *args: Any, then: Callable[[Any], Any] | None = None) -> Any:
        method = self.port.read if name == "read" else getattr(self.port, name)
        result = method(*args)
        if inspect.isawaitable(result):
            result = await result
        carried = json.loads(json.dumps(result))
        return then(carried) if then else carried


class DaemonFacade(PortFacade):
    def __init__(self, port: DaemonPort) -> None:
        self.port = port
        super().__init__(LocalCaller(port), port.registry.access, port.registry.state_dir)


if TYPE_CHECKING:
    from luod.rest.facade import RestFacade

    def _implements(registry: Registry, driver: UpdateDriver) -> RestFacade:
        return DaemonFacade(DaemonPort(registry, driver))  # mypy checks the Protocol here
