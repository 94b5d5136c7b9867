"""A package in ``sys.modules`` whose ``__init__`` has not run yet: luod then imports the few
submodules it uses, and the package runs its ``__init__`` (completes itself) the first time
anyone asks it for a name it does not have.

pyroute2's and structlog's ``__init__`` import everything the package has (every netlink
family; structlog's dev renderer, its stdlib and Twisted bridges), most of which luod never
uses, on its path from exec to the first RECLAIM after a kexec (luod.lean, luod.net.iproute;
bench/NOTES.md). Completion is once, thread-safe, and under the import system's usual rules: a
name the ``__init__`` binds is there afterwards, as if the package had been imported whole.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

_registering = threading.Lock()  # two threads deferring one package make one module


def defer_init(name: str, *, complete_for_submodules: bool) -> ModuleType | None:
    """Package ``name`` made from its spec and put in ``sys.modules``, its ``__init__`` not
    run. None when it is imported already, or is not an importable package here: the caller
    then imports it whole, which says what is wrong.

    ``complete_for_submodules``: whether asking the package for one of its submodules by
    attribute (``package.sub``, ``from package import sub``) completes it too. False leaves
    such names to the import system, which imports that submodule alone (pyroute2's own
    modules import their siblings that way); True completes the package, as code written
    against the whole package (``import structlog; structlog.stdlib...``) expects."""
    with _registering:
        if name in sys.modules:
            return None
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return None
        package = importlib.util.module_from_spec(spec)
        package.__getattr__ = _completing(package, complete_for_submodules)  # type: ignore[method-assign]
        sys.modules[name] = package
        return package


def _completing(package: ModuleType, complete_for_submodules: bool) -> Any:
    """The package's module ``__getattr__``, called only for names it does not have."""
    lock = threading.RLock()  # the __init__ asks the package for names while it runs
    running = done = False

    def run() -> None:
        nonlocal running, done
        with lock:
            if running or done:
                return
            running = True
            try:
                spec = package.__spec__
                assert spec is not None and spec.loader is not None
                spec.loader.exec_module(package)
            finally:
                running, done = False, True
                if package.__dict__.get("__getattr__") is getattr_:  # not the __init__'s own
                    del package.__dict__["__getattr__"]

    def getattr_(attr: str) -> Any:
        if not complete_for_submodules and _is_submodule(package, attr):
            raise AttributeError(attr)  # `from pyroute2 import config`: imported alone
        with lock:
            if running:  # the __init__'s own `from package import sub`: the import system's
                raise AttributeError(attr)
            run()
        return getattr(package, attr)  # bound by the __init__, or its own __getattr__'s answer

    return getattr_


def _is_submodule(package: ModuleType, attr: str) -> bool:
    return importlib.util.find_spec(f"{package.__name__}.{attr}") is not None
