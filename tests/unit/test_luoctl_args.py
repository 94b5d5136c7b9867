"""luoctl checks every argument before it sends anything (issue 16 §1): a bad one is a usage
error (exit 2) naming it, never a traceback, never a request luod has to refuse."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from luod.cli import args
from luod.cli.main import main
from luod.core import model, orchestrator

pytestmark = pytest.mark.unit


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_the_limits_luoctl_restates_are_luods() -> None:
    assert args.VM_ID.pattern == model.VM_ID.pattern
    assert args.DEADLINE_PHASES == orchestrator.DEADLINE_PHASES
    assert args.MAX_DEADLINE == orchestrator.MAX_DEADLINE


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["vm", "../status"], "is not a VM id"),
        (["vm", "a/b"], "is not a VM id"),
        (["vm", "x", "y"], "vm takes an ID, or 'drop ID'"),
        (["vm", "x", "--force"], "--force goes with 'vm drop ID'"),
        (["update", "start", "--kernel", "k", "--reuse-cmdline", "--deadline", "freezing=inf"],
         "must be more than 0 s and at most 604800"),
        (["update", "start", "--kernel", "k", "--reuse-cmdline", "--deadline", "freezing=nan"],
         "must be more than 0 s"),
        (["update", "start", "--kernel", "k", "--reuse-cmdline", "--deadline", "freezing=0"],
         "must be more than 0 s"),
        (["update", "start", "--kernel", "k", "--reuse-cmdline", "--deadline", "freezng=5"],
         "'freezng' has no deadline (phases: preparing, freezing"),
        (["history", "--last", "0"], "must be 1 or more"),
        (["history", "--last", "-3"], "must be 1 or more"),
        (["history", "--last", "many"], "is not a whole number"),
        (["update", "wait", "--timeout", "inf"], "the timeout must be more than 0 s and finite"),
        (["--url", "luod.example:8443", "status"], "is not an http:// or https:// URL"),
    ],
)  # fmt: skip
def test_bad_arguments_are_usage_errors_naming_what_is_wrong(argv: list[str], said: str) -> None:
    code, _, err = run(*argv)
    assert code == 2 and said in err and "Traceback" not in err


def test_paths_are_made_absolute_here(tmp_path: Path) -> None:
    from luod.cli.parser import build_parser

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        parsed = build_parser().parse_args(
            ["preflight", "--kernel", "bzImage", "--initrd", "../initrd", "--reuse-cmdline"]
        )
    finally:
        os.chdir(here)
    assert parsed.kernel == str(tmp_path / "bzImage")
    assert parsed.initrd == str(tmp_path.parent / "initrd")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read the token file"),
        ("", "is empty"),
        ("two words\n", "does not hold one token"),
        ("line1\nline2\n", "does not hold one token"),
        (b"\xff\xfe", "cannot read the token file"),
    ],
)
def test_a_wrong_token_file_is_a_usage_error_not_unreachable(
    tmp_path: Path, content: str | bytes | None, said: str
) -> None:
    token = tmp_path / "token"
    if isinstance(content, bytes):
        token.write_bytes(content)
    elif content is not None:
        token.write_text(content)
    code, _, err = run("--url", "http://127.0.0.1:9", "--token-file", str(token), "status")
    assert code == 2 and said in err and "cannot reach luod" not in err
    assert "hint: check --token-file" in err


def test_a_directory_as_token_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("--url", "http://127.0.0.1:9", "--token-file", str(tmp_path), "vms")
    assert code == 2 and "Is a directory" in err


def test_unreachable_over_tcp_is_exit_5_with_a_hint() -> None:
    code, _, err = run("--url", "http://127.0.0.1:9", "status")
    assert code == 5 and "cannot reach luod at http://127.0.0.1:9" in err and "hint:" in err


@pytest.mark.parametrize(
    ("argv", "code"),
    [(["--help"], 0), (["completion", "bash"], 141)],  # argparse ignores EPIPE itself
)
def test_a_closed_pipe_ends_quietly(argv: list[str], code: int) -> None:
    """``luoctl ... | true``: the reader is gone before luoctl writes (a real pipe)."""
    script = f"import sys; from luod.cli.main import main; sys.exit(main({argv!r}))"
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(writer)
    assert done.stderr == "" and done.returncode == code
