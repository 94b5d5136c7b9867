"""The collection's REST client (module_utils/luod_api.py) on its own, against a small server
on a unix socket that answers as luod's REST worker does: what counts as "luod unreachable"
(a poll tries again) and what as luod's refusal (the module fails the host)."""

from __future__ import annotations

import importlib.util
import json
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType

import pytest

LUOD_API = (
    Path(__file__).resolve().parents[2]
    / "packaging/ansible_collections/luod/liveupdate/plugins/module_utils/luod_api.py"
)


def load_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("luod_api_under_test", LUOD_API)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Answer(BaseHTTPRequestHandler):
    """Every request gets ``server.reply``: (status, problem document)."""

    def do_GET(self) -> None:
        status, document = self.server.reply  # type: ignore[attr-defined]
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


class UnixHttp(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):  # type: ignore[no-untyped-def]
        request, _ = super().get_request()
        return request, ("luod", 0)  # BaseHTTPRequestHandler wants a (host, port)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[UnixHttp]:
    httpd = UnixHttp(str(tmp_path / "api.sock"), Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def problem(status: int, code: str) -> tuple[int, dict[str, object]]:
    return status, {"status": status, "code": code, "detail": "said", "hint": "do"}


def test_a_503_rest_link_is_luod_unreachable_so_a_poll_tries_again(server: UnixHttp) -> None:
    api = load_client()
    server.reply = problem(503, "rest-link")  # type: ignore[attr-defined]
    client = api.LuodClient(server.server_address)
    with pytest.raises(api.LuodUnreachable, match="not answering: rest-link"):
        client.update()


def test_other_refusals_stay_luods_answer_with_code_and_hint(server: UnixHttp) -> None:
    api = load_client()
    client = api.LuodClient(server.server_address)
    for status, code in ((503, "custody-unavailable"), (409, "update-running")):
        server.reply = problem(status, code)  # type: ignore[attr-defined]
        with pytest.raises(api.LuodApiError) as refused:
            client.update()
        error = refused.value
        assert (error.status, error.code, error.hint) == (status, code, "do")


def test_wait_reachable_waits_out_rest_link_until_luod_answers(server: UnixHttp) -> None:
    api = load_client()
    server.reply = problem(503, "rest-link")  # type: ignore[attr-defined]
    client = api.LuodClient(server.server_address)
    timer = threading.Timer(0.3, setattr, (server, "reply", (200, {"kernel": "7.3.4"})))
    timer.start()
    try:
        assert client.wait_reachable(timeout=10, interval=0.05) == {"kernel": "7.3.4"}
    finally:
        timer.cancel()
    assert client.requests >= 2
