"""luod's start-up imports asyncio without ``ssl`` (luod.lean: OpenSSL's libraries cost 0.1-0.3 s
in the TCG guest), and the REST stack's import (in luod's REST worker, luod.rest.worker) links
asyncio to ``ssl`` again: TLS on asyncio then works there as anywhere else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.certs import self_signed

PROBE = """
import sys
import luod.main  # first, as the luod command starts
import asyncio
assert "ssl" not in sys.modules and sys.modules["asyncio.base_events"].ssl is None
from luod import lean
if sys.argv[3] == "relink":
    lean.asyncio_tls()
import ssl

async def echo(reader, writer):
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()

async def main():
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(sys.argv[1], sys.argv[2])
    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_side)
    port = server.sockets[0].getsockname()[1]
    trust = ssl.create_default_context(cafile=sys.argv[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trust)
    writer.write(b"over tls\\n")
    print((await asyncio.wait_for(reader.readline(), 10)).decode().strip())
    writer.close()
    server.close()

asyncio.run(main())
"""


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


def probe(certificate: tuple[Path, Path], mode: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", PROBE, str(certificate[0]), str(certificate[1]), mode]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_asyncio_does_tls_once_the_rest_stack_relinked_it(certificate: tuple[Path, Path]) -> None:
    done = probe(certificate, "relink")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "over tls"


def test_without_the_relink_asyncio_has_no_tls(certificate: tuple[Path, Path]) -> None:
    """What asyncio_tls() is for: the start-up left asyncio as if Python had no ssl."""
    done = probe(certificate, "none")
    assert done.returncode != 0 and "ssl module not available" in done.stderr


def test_the_rest_stacks_import_relinks_asyncio() -> None:
    code = (
        "import sys, luod.main; from luod.rest import worker; worker.import_stack(); "
        "print(sys.modules['asyncio.base_events'].ssl is sys.modules['ssl'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "True", done.stderr
