"""luod.deferred: a package whose ``__init__`` runs only when someone asks it for a name it
lacks, once, whichever thread asks first (pyroute2's and structlog's, on luod's start-up path).
Each case makes a small package of its own on sys.path."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.deferred import defer_init

INIT = """
import time
from {name} import counter
counter.RUNS += 1
time.sleep({sleep})
from {name} import sub
WHOLE = "the whole package"


def __getattr__(attr):  # the package's own (PEP 562), as structlog's for __version__
    if attr == "__version__":
        return "1.0"
    raise AttributeError(attr)
"""


@pytest.fixture
def package(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A package ``<name>`` with ``counter`` (how many times its __init__ ran) and ``sub``;
    its __init__ imports both and binds WHOLE."""
    name = f"luod_deferred_{request.node.originalname}"
    root = tmp_path / name
    root.mkdir()
    sleep = getattr(request, "param", 0.0)
    (root / "__init__.py").write_text(INIT.format(name=name, sleep=sleep))
    (root / "counter.py").write_text("RUNS = 0\n")
    (root / "sub.py").write_text("SUB = 'sub alone'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


def runs(name: str) -> int:
    return int(sys.modules[f"{name}.counter"].RUNS)


def test_the_init_runs_only_when_asked_for_a_name_it_lacks(package: str) -> None:
    deferred = defer_init(package, complete_for_submodules=False)
    assert deferred is not None and deferred is sys.modules[package]
    __import__(f"{package}.counter")  # a submodule imported by its name: no completion
    assert runs(package) == 0
    assert deferred.WHOLE == "the whole package"
    assert runs(package) == 1
    assert deferred.WHOLE == "the whole package" and runs(package) == 1


def test_a_submodule_is_imported_alone_unless_asked_to_complete(package: str) -> None:
    defer_init(package, complete_for_submodules=False)
    sub = __import__(package, fromlist=["sub"]).sub  # from <package> import sub
    assert sub.SUB == "sub alone"
    assert f"{package}.counter" not in sys.modules  # the __init__ did not run


def test_asking_for_a_submodule_completes_when_asked_to(package: str) -> None:
    deferred = defer_init(package, complete_for_submodules=True)
    assert deferred is not None
    assert deferred.sub.SUB == "sub alone"
    assert runs(package) == 1 and deferred.WHOLE == "the whole package"


def test_the_packages_own_module_getattr_stays_after_the_init(package: str) -> None:
    deferred = defer_init(package, complete_for_submodules=True)
    assert deferred is not None
    assert deferred.__version__ == "1.0"  # asked first: the __init__ runs, then its own
    assert deferred.__version__ == "1.0" and runs(package) == 1
    with pytest.raises(AttributeError):
        deferred.nothing  # noqa: B018


def test_a_missing_name_is_an_attribute_error_after_the_init(package: str) -> None:
    deferred = defer_init(package, complete_for_submodules=True)
    assert deferred is not None
    with pytest.raises(AttributeError, match="nothing"):
        deferred.nothing  # noqa: B018
    assert runs(package) == 1


@pytest.mark.parametrize("package", [0.3], indirect=True)
def test_two_threads_asking_at_once_run_the_init_once(package: str) -> None:
    deferred = defer_init(package, complete_for_submodules=True)
    assert deferred is not None
    seen: list[str] = []

    def ask() -> None:
        seen.append(deferred.WHOLE)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == ["the whole package"] * 4
    assert runs(package) == 1


def test_a_package_imported_before_is_left_alone(package: str) -> None:
    whole = __import__(package)
    assert defer_init(package, complete_for_submodules=True) is None
    assert sys.modules[package] is whole and runs(package) == 1


def test_a_plain_module_or_a_missing_package_is_left_to_the_import(tmp_path: Path) -> None:
    (tmp_path / "luod_deferred_plain.py").write_text("PLAIN = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert defer_init("luod_deferred_plain", complete_for_submodules=True) is None
        assert defer_init("luod_deferred_absent", complete_for_submodules=True) is None
    finally:
        sys.path.remove(str(tmp_path))
    assert not {"luod_deferred_plain", "luod_deferred_absent"} & set(sys.modules)
