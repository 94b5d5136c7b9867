"""The luod command serves its REST API over TLS (api.tls_cert, api.tls_key), although its
start-up imports asyncio without ``ssl`` (luod.lean): a real luod process, an HTTPS client."""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path

from tests.certs import self_signed
from tests.integration.conftest import start_daemon
from tests.integration.test_rest_memory import _free_port, _wait_listening

TOKEN = "tls-test-token-0123456789"


def test_the_luod_command_serves_rest_over_tls(tmp_path: Path) -> None:
    (cert, key), token = self_signed(tmp_path), tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    port = _free_port()
    options = ["--api-tcp", f"127.0.0.1:{port}", "--api-token-file", str(token)]
    options += ["--api-tls-cert", str(cert), "--api-tls-key", str(key)]
    daemon = start_daemon(tmp_path / "luod", *options, api=True)
    try:
        _wait_listening(port, daemon)
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        trust = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(request, context=trust, timeout=30) as reply:
            status, body = reply.status, json.loads(reply.read())
        assert daemon.alive()
    finally:
        daemon.stop()
    assert status == 200 and body
