# -*- coding: utf-8 -*-
# Copyright: luod contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A client of luod's REST API (api/openapi.json in luod's repository), from the Python
standard library only: modules run on the managed host's Python, where luod's own packages may
not be importable.

On the host, luod's unix socket (default /run/luod/api.sock) needs no token; over TCP
(``url``) every request carries the bearer token from ``token_file``. luod answers errors as
RFC 9457 problem documents: ``LuodApiError`` keeps the document (code, detail, hint, checks).
``LuodUnreachable`` is the world failing (no socket, refused, reset, or luod's REST worker
saying luod does not answer it: luod is restarting or the host is rebooting).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket
import time

try:
    from http import client as http_client
    from urllib.parse import quote, urlencode, urlsplit
except ImportError:  # pragma: no cover - Python 2 has no place here, but sanity imports it
    http_client = None
    quote = urlencode = urlsplit = None

DEFAULT_SOCKET = "/run/luod/api.sock"
NOT_ANSWERING = ("rest-link",)
"""Codes of a 503 that mean luod itself did not answer (its REST worker still did, while luod
stops for the kexec or restarts): the same as no socket at all, so a poll tries again."""

CONNECTION_ARGS = dict(
    socket=dict(type="path", default=DEFAULT_SOCKET),
    url=dict(type="str"),
    token_file=dict(type="path"),
    api_timeout=dict(type="float", default=30.0),
)


class LuodApiError(Exception):
    """luod said no: ``problem`` is its problem document."""

    def __init__(self, status, problem):
        self.status = status
        self.problem = problem
        self.code = str(problem.get("code", "http-error"))
        self.detail = str(problem.get("detail", ""))
        self.hint = str(problem.get("hint") or "")
        super(LuodApiError, self).__init__("%s: %s" % (self.code, self.detail))


class LuodUnreachable(Exception):
    """luod did not answer (not running, restarting, or the host is rebooting)."""


class _UnixConnection(http_client.HTTPConnection if http_client else object):
    def __init__(self, path, timeout):
        http_client.HTTPConnection.__init__(self, "luod", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except Exception:
            sock.close()
            raise
        self.sock = sock


class LuodClient:
    """One luod: ``LuodClient(socket_path)`` on the host, or ``LuodClient(url=, token=)``."""

    def __init__(self, socket_path=DEFAULT_SOCKET, url=None, token=None, timeout=30.0):
        self.socket_path = socket_path
        self.url = url
        self.token = token
        self.timeout = timeout
        self.requests = 0

    def where(self):
        return self.url or self.socket_path

    def _connection(self):
        if self.url is None:
            return _UnixConnection(self.socket_path, self.timeout), ""
        parts = urlsplit(self.url)
        if parts.scheme == "https":
            connection = http_client.HTTPSConnection(parts.netloc, timeout=self.timeout)
        else:
            connection = http_client.HTTPConnection(parts.netloc, timeout=self.timeout)
        return connection, parts.path.rstrip("/")

    def request(self, method, path, body=None, query=None):
        """The JSON document luod answers; raises LuodApiError or LuodUnreachable."""
        connection, prefix = self._connection()
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer %s" % self.token
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        target = prefix + path + ("?" + urlencode(query) if query else "")
        self.requests += 1
        try:
            connection.request(method, target, body=payload, headers=headers)
            reply = connection.getresponse()
            status, data = reply.status, reply.read()
        except (OSError, http_client.HTTPException) as exc:
            raise LuodUnreachable("cannot reach luod at %s: %s" % (self.where(), exc))
        finally:
            connection.close()
        document = _decode(data)
        if status >= 400:
            if not isinstance(document, dict) or "code" not in document:
                document = {"code": "http-error", "status": status, "detail": data[:200]}
            if status == 503 and document["code"] in NOT_ANSWERING:
                reason = "luod at %s is not answering: %s" % (self.where(), document["code"])
                raise LuodUnreachable(reason)
            raise LuodApiError(status, document)
        return document

    # --- the resources (operationId in luod's OpenAPI) --------------------------------------
    def status(self):
        return self.request("GET", "/v1/status")

    def vms(self):
        return self.request("GET", "/v1/vms")["vms"]

    def vm(self, vm_id):
        return self.request("GET", "/v1/vms/%s" % quote(vm_id, safe=""))

    def drop_vm(self, vm_id, force=False):
        query = {"force": "true"} if force else None
        return self.request("DELETE", "/v1/vms/%s" % quote(vm_id, safe=""), query=query)

    def update(self):
        return self.request("GET", "/v1/update")

    def history(self, limit=1):
        return self.request("GET", "/v1/history", query={"limit": limit})["history"]

    def preflight(self, body):
        return self.request("POST", "/v1/preflight", body)

    def start_update(self, body):
        return self.request("POST", "/v1/update", body)

    def wait_reachable(self, timeout, interval=0.5):
        """GET /v1/status until luod answers (it may be starting after a kexec)."""
        deadline = time.time() + timeout
        while True:
            try:
                return self.status()
            except LuodUnreachable:
                if time.time() >= deadline:
                    raise
                time.sleep(interval)


def _decode(data):
    try:
        return json.loads(data.decode("utf-8")) if data else None
    except ValueError:
        return None


def client_from_params(params):
    """A client from a module's CONNECTION_ARGS parameters (the token read from its file)."""
    token = None
    if params.get("token_file"):
        with open(params["token_file"]) as source:
            token = source.read().strip()
    return LuodClient(
        socket_path=params.get("socket") or DEFAULT_SOCKET,
        url=params.get("url"),
        token=token,
        timeout=float(params.get("api_timeout") or 30.0),
    )


def problem_result(error):
    """What a module returns about a refusal: luod's code, detail, hint, checks."""
    found = {"code": error.code, "detail": error.detail, "hint": error.hint}
    if error.problem.get("checks") is not None:
        found["checks"] = error.problem["checks"]
    if error.problem.get("errors") is not None:
        found["errors"] = error.problem["errors"]
    return found
