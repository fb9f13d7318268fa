"""
Real HTTP over loopback against a real twisted.web Site, for the admin tests.

The client is the standard library's ``http.client`` run in a thread (the
reactor keeps serving meanwhile): an independent HTTP implementation, and
it lets a test set ``Host`` and ``Origin`` freely.
"""

from __future__ import annotations

import http.client
from typing import Any, Optional

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.web.server import Site

reactor: Any = _reactor


class Response:
    def __init__(self, code: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name)


def listen(site: Site) -> Any:
    """Bind ``site`` on 127.0.0.1, an ephemeral port; returns the IListeningPort."""
    return reactor.listenTCP(0, site, interface="127.0.0.1")


def _request(port: int, path: str, method: str, headers: dict[str, str]) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        return Response(r.status, r.headers, r.read())
    finally:
        conn.close()


def fetch(port: Any, path: str, method: str = "GET",
          headers: Optional[dict[str, str]] = None) -> Deferred[Response]:
    """One real request to the listening ``port``."""
    return deferToThread(_request, port.getHost().port, path, method, dict(headers or {}))


def close(port: Any) -> Deferred[Any]:
    return port.stopListening()
