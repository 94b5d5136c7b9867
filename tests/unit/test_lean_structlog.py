"""luod.lean_structlog: structlog's core for luod's start-up, without the package's __init__
(the dev renderer, the stdlib and Twisted bridges); the rest of structlog as usual once asked
for. Each case runs in a fresh interpreter, so that no earlier import of structlog hides what
luod's import does."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from tests import fresh

LEFT_OUT = ("structlog.dev", "structlog.stdlib", "structlog.threadlocal", "structlog.testing")


def run(code: str, *path: Path) -> dict[str, object]:
    """``code`` in a fresh interpreter (``path`` first on sys.path): the JSON object it printed
    last, with what it wrote to stdout and stderr."""
    done = fresh.run(code, *path)
    return {**fresh.last_json(done), "stdout": done.stdout, "stderr": done.stderr}


def test_luod_logs_json_with_the_core_alone() -> None:
    found = run(f"""
        import json, sys
        import luod.main, structlog
        from luod.daemon import logs
        logs.configure()
        log = structlog.get_logger("t")
        log.info("hello", n=1)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        print(json.dumps({{"loaded": [m for m in {LEFT_OUT!r} if m in sys.modules],
                          "init_ran": "BoundLogger" in vars(structlog)}}))
    """)
    assert found["loaded"] == [] and found["init_ran"] is False
    lines = [json.loads(line) for line in str(found["stderr"]).splitlines()]
    assert lines[0]["event"] == "hello" and lines[0]["n"] == 1 and lines[0]["level"] == "info"
    assert lines[1]["event"] == "failed" and "ValueError: boom" in lines[1]["exception"]


def test_the_rest_of_structlog_comes_when_asked_for() -> None:
    found = run("""
        import json, sys
        import luod.main, structlog
        get_logger = structlog.get_logger
        from luod.daemon import logs
        logs.configure()
        bound = structlog.stdlib.BoundLogger  # a name the core lacks: the __init__ runs
        from structlog.testing import capture_logs
        with capture_logs() as captured:
            structlog.get_logger("luod").warning("seen", vm="vm0")
        print(json.dumps({
            "stdlib": bound.__module__,
            "dev": structlog.dev.ConsoleRenderer.__module__,
            "dev_module": sys.modules["structlog.dev"].__file__.endswith("dev.py"),
            "same_get_logger": structlog.get_logger is get_logger,
            "generic": structlog.BoundLogger.__module__,
            "captured": captured,
            "version": structlog.__version__,  # the package's own module __getattr__
        }))
    """)
    assert found["stdlib"] == "structlog.stdlib" and found["generic"] == "structlog._generic"
    assert found["dev"] == "structlog.dev" and found["dev_module"] is True
    assert found["same_get_logger"] is True
    assert found["captured"] == [{"event": "seen", "vm": "vm0", "log_level": "warning"}]
    assert found["version"] == version("structlog")


def test_an_unconfigured_structlog_renders_with_its_real_console_renderer() -> None:
    """structlog._config's defaults were made with the stand-in's names: they become the real
    structlog.dev's when they first run."""
    found = run("""
        import json
        import luod.main, structlog
        structlog.reset_defaults()
        log = structlog.get_logger()
        log.info("plain", answer=42)
        try:
            raise KeyError("k")
        except KeyError:
            log.exception("oops")
        print(json.dumps({}))
    """)
    console = str(found["stdout"])  # structlog's default logger prints to stdout
    assert "[info     ] plain" in console and "answer=42" in console
    assert "[error    ] oops" in console and "KeyError: 'k'" in console


def test_a_structlog_imported_whole_before_is_used_as_it_is() -> None:
    found = run("""
        import json, sys
        import structlog
        import luod.main
        print(json.dumps({"dev": "structlog.dev" in sys.modules,
                          "same": sys.modules["structlog"] is structlog,
                          "whole": "BoundLogger" in vars(structlog)}))
    """)
    assert {k: found[k] for k in ("dev", "same", "whole")} == {
        "dev": True,
        "same": True,
        "whole": True,
    }


def test_another_layout_imports_the_whole_package(tmp_path: Path) -> None:
    """A structlog without the core's modules (say, a future one): imported whole, as before,
    and nothing of the attempt left behind."""
    fake = tmp_path / "structlog"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "WHOLE = 'the whole package'\n"
        "def get_logger(*args): return None\n"
        "def configure(**kwargs): pass\n"
    )
    found = run(
        """
        import json, sys
        from luod import lean_structlog
        lean_structlog.import_core()
        import structlog
        print(json.dumps({"whole": structlog.WHOLE,
                          "modules": sorted(m for m in sys.modules if m.startswith("structlog"))}))
        """,
        tmp_path,
    )
    assert found["whole"] == "the whole package"
    assert found["modules"] == ["structlog"]
