"""What the fuzz targets found that no finding of issue 13 named, each kept as a regression
test: the input the fuzzer made, and the answer luod must give."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from luod.errors import LuodError
from luod.vmm import codec, parse
from tests.rest.harness import FakeVmm, Luod

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("cmd", ["KEXEC", "UPDATE"])
@pytest.mark.parametrize("key", ["kernel", "initrd", "cmdline"])
def test_a_lone_surrogate_in_a_text_field_is_a_bad_request(cmd: str, key: str) -> None:
    """tests/fuzz dispatch: {"cmd":"KEXEC","kernel":"...\\ud800"} reached os.stat, whose
    UnicodeEncodeError became an internal error with a traceback in luod's log."""
    fields = {"kernel": "/boot/vmlinuz", key: "/x\\ud800"}
    line = "{" + ",".join(f'"{k}":"{v}"' for k, v in {"cmd": cmd, **fields}.items()) + "}"
    with pytest.raises(LuodError) as caught:
        parse.decode_request(codec.Frame(line.encode()))
    assert caught.value.code == "bad-request" and key in str(caught.value)


def test_luod_answers_a_lone_surrogate_kernel_with_bad_request(tmp_path: Path) -> None:
    async def ask() -> dict[str, object]:
        luod = Luod(tmp_path / "luod")
        try:
            return await luod.ask(FakeVmm(), {"cmd": "KEXEC", "kernel": "/x\ud800"})
        finally:
            luod.close()

    reply = asyncio.run(ask())
    assert reply["ok"] is False
    assert isinstance(reply["error"], dict) and reply["error"]["code"] == "bad-request"
