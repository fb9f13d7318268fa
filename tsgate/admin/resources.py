"""
The admin interface's twisted.web resources: which path is which page, the
guards in front of them (methods, ``Host``, ``Origin``), status codes and
content types. What each page shows is built by :mod:`tsgate.admin.views`;
:mod:`tsgate.admin.server` wraps these trees in sites.

The admin site is meant for 127.0.0.1 (the default endpoint in
``tsgate.tap``): it can stop the gateway. Because a browser on the same
machine can be made to talk to loopback, POSTs carrying a foreign ``Origin``
are refused (cross-site form posts), and requests whose ``Host`` is not an IP
literal, ``localhost`` or an allowed name are refused (DNS rebinding would
otherwise let a web page read ``/config_dump``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional, Union
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, pages
from twisted.web.resource import Resource
from twisted.web.server import Request

from tsgate.admin import prometheus, stats_text, views
from tsgate.admin.jsonable import to_jsonable
from tsgate.admin.state import GatewayState

log = Logger(namespace="tsgate.admin")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

Handler = Callable[[Request], Union[bytes, int]]


# ---------------------------------------------------------------------------------------------
# helpers


def _arg(request: Request, name: str) -> Optional[str]:
    values = (request.args or {}).get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _has_arg(request: Request, name: str) -> bool:
    return name.encode() in (request.args or {})


def _json(request: Request, payload: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(to_jsonable(payload), indent=2, sort_keys=False).encode() + b"\n"


def _text(request: Request, body: str, code: int = 200,
          content_type: bytes = b"text/plain; charset=utf-8") -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    return body.encode("utf-8")


def host_allowed(host: Optional[bytes], allowed: Sequence[str]) -> bool:
    """May a request naming ``Host: host`` see the admin site (DNS rebinding guard)?"""
    if not host:
        return True  # HTTP/1.0 clients and curl --http1.0 send none; nothing to rebind
    name = host.decode("latin-1").strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name in ("localhost", "localhost.") or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _same_origin(request: Request) -> bool:
    """True unless a browser says the request comes from another origin."""
    origin = request.getHeader(b"origin")
    if not origin:
        return True  # curl and scripts send none
    host = request.getHeader(b"host") or b""
    return urlsplit(origin.decode("latin-1")).netloc.lower() == host.decode("latin-1").lower()


# ---------------------------------------------------------------------------------------------
# resources


class Dir(Resource):
    """A resource whose unknown children are a plain 404 (twisted's default is deprecated)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def getChild(self, path: bytes, request: Request) -> Any:  # noqa: N802
        return pages.notFound()


class Endpoint(Dir):
    """A leaf calling ``handler(request)`` for the allowed methods only."""

    isLeaf = True

    def __init__(self, handler: Handler, methods: Iterable[bytes] = (b"GET", b"HEAD")) -> None:
        super().__init__()
        self.handler = handler
        self.methods = tuple(methods)

    def render(self, request: Request) -> Union[bytes, int]:
        if request.method not in self.methods:
            request.setResponseCode(http.NOT_ALLOWED)
            request.setHeader(b"allow", b", ".join(self.methods))
            return b"method not allowed\n"
        if request.method == b"POST" and not _same_origin(request):
            request.setResponseCode(http.FORBIDDEN)
            return b"cross-origin POST refused\n"
        return self.handler(request)


class GuardedRoot(Dir):
    """Refuses unknown Host names before any child sees the request."""

    def __init__(self, allowed_hosts: Sequence[str]) -> None:
        super().__init__()
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:  # noqa: N802
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if not host_allowed(request.getHeader(b"host"), self.allowed_hosts):
            return Endpoint(_forbidden_host, methods=(b"GET", b"HEAD", b"POST", b"PUT",
                                                     b"DELETE", b"OPTIONS", b"PATCH"))
        child: Resource = super().getChildWithDefault(  # type: ignore[no-untyped-call]
            path, request)
        return child


def _forbidden_host(request: Request) -> bytes:
    return _text(request, "Host not allowed (admin is for localhost)\n", http.FORBIDDEN)


#: Content types of the status page's files.
STATIC_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                ".css": b"text/css; charset=utf-8"}


def _static(name: str) -> Endpoint:
    """
    One status-page file, read from disk per request (a few KiB; editing it
    needs no restart). twisted.web.static is not used: importing it emits a
    DeprecationWarning in current Twisted, and three known files need no
    directory traversal logic.
    """
    path = os.path.join(STATIC_DIR, name)
    content_type = STATIC_TYPES[os.path.splitext(name)[1]]

    def serve(request: Request) -> bytes:
        with open(path, "rb") as f:
            body = f.read()
        request.setHeader(b"content-type", content_type)
        return body

    return Endpoint(serve)


# ---------------------------------------------------------------------------------------------
# the handlers


class AdminResources:
    """The handlers, bound to one gateway; separate from the tree to be easy to read."""

    def __init__(self, gateway: GatewayState, now: Callable[[], float] = time.time) -> None:
        self.gateway = gateway
        self.now = now
        self.draining = False
        self.created = now()
        #: (time, totals) of recent /status requests, for the rates
        self._samples: deque[views.Sample] = deque(maxlen=64)

    def stats(self, request: Request) -> bytes:
        filter_re = _arg(request, "filter")
        used_only = _has_arg(request, "usedonly")
        try:
            if _arg(request, "format") == "json":
                return _json(request, stats_text.render_json(self.gateway.stats, filter_re,
                                                            used_only))
            return _text(request, stats_text.render_text(self.gateway.stats, filter_re,
                                                        used_only))
        except Exception as e:  # a bad ?filter= regex
            return _text(request, f"bad request: {e}\n", http.BAD_REQUEST)

    def prometheus(self, request: Request) -> bytes:
        return _text(request, prometheus.render_all(self.gateway.stats),
                     content_type=prometheus.CONTENT_TYPE.encode())

    def config_dump(self, request: Request) -> bytes:
        return _json(request, views.config_dump(self.gateway))

    def listeners(self, request: Request) -> bytes:
        listeners = views.listeners_view(self.gateway)
        if _arg(request, "format") == "json":
            return _json(request, {"listeners": listeners})
        return _text(request, views.listeners_text(listeners))

    def clusters(self, request: Request) -> bytes:
        clusters = views.clusters_view(self.gateway)
        if _arg(request, "format") == "json":
            return _json(request, {"clusters": clusters})
        return _text(request, views.clusters_text(clusters))

    def connections(self, request: Request) -> bytes:
        try:
            limit = int(_arg(request, "limit") or views.DEFAULT_PAGE)
            offset = int(_arg(request, "offset") or 0)
        except ValueError:
            return _text(request, "bad request: limit and offset are integers\n",
                         http.BAD_REQUEST)
        return _json(request, views.connections_view(self.gateway, self.now(), limit, offset))

    def status(self, request: Request) -> bytes:
        return _json(request, self.status_view())

    def status_view(self) -> dict[str, Any]:
        """``/status`` now; each call is a sample for the next calls' rates."""
        now = self.now()
        totals = views.status_totals(self.gateway)
        rates = views.rates_per_second(totals, self._samples, now)
        self._samples.append((now, totals))
        started = getattr(self.gateway, "started_at", None) or self.created
        return views.status_view(self.gateway, now, started, totals, rates)

    def errors(self, request: Request) -> bytes:
        return _json(request, {"errors": views.errors_view(self.gateway)})

    def ready(self, request: Request) -> bytes:
        if self.gateway.ready:
            return _text(request, "LIVE\n")
        state = "DRAINING" if self.draining or getattr(self.gateway, "draining", False) \
            else "NOT_READY"
        return _text(request, state + "\n", http.SERVICE_UNAVAILABLE)

    def drain(self, request: Request) -> bytes:
        """Start a graceful drain and answer at once; the drain period runs on."""
        if not self.draining:
            self.draining = True
            log.info("drain requested through the admin server")
            d = self.gateway.drain()

            def failed(f: Failure) -> None:
                log.failure("drain failed", f)

            d.addErrback(failed)
        return _text(request, "OK: draining\n")

    def reload(self, request: Request) -> bytes:
        try:
            result = self.gateway.reload()
        except Exception as e:
            log.failure("reload through the admin server failed")
            return _json(request, {"ok": False, "errors": [f"{type(e).__name__}: {e}"]},
                         http.INTERNAL_SERVER_ERROR)
        ok = bool(getattr(result, "ok", False))
        errors = [str(d) for d in getattr(result, "errors", ()) or ()]
        return _json(request, {"ok": ok, "errors": errors},
                     http.OK if ok else http.BAD_REQUEST)

    def help(self, request: Request) -> bytes:
        return _text(request, HELP)

    def authz(self, request: Request) -> bytes:
        from tsgate.admin.authz_view import authz_view

        return _json(request, authz_view(self.gateway))


HELP = """admin commands are:
  /                    status page
  /stats               counters, gauges, histograms (?format=json, ?filter=REGEX, ?usedonly)
  /stats/prometheus    Prometheus text format
  /config_dump         loaded config and compiled route table (JSON)
  /listeners           listeners (?format=json)
  /clusters            clusters, endpoints, active connections, last errors (?format=json)
  /connections         live connections, oldest first (JSON; ?limit=N up to 1000, ?offset=N)
  /status              version, uptime, last reload, totals, rates, live counts (JSON)
  /errors              recent errors (JSON)
  /authz               authorization policies, limits, recent denials and limited sources (JSON)
  /ready               200 LIVE when ready, else 503
  POST /drain          stop accepting, fail readiness, let connections finish for the
                       drain period, then close the rest; the process keeps running
                       (SIGTERM drains the same way and then exits)
  POST /reload         reload the configuration now
"""


# ---------------------------------------------------------------------------------------------
# the trees


def admin_root(handlers: AdminResources, allowed_hosts: Sequence[str] = ()) -> GuardedRoot:
    """
    The admin tree: every page of :data:`HELP` and the status page's files.
    ``allowed_hosts`` are extra ``Host`` names accepted besides IP literals
    and ``localhost`` (for an admin put behind a name).
    """
    r = handlers
    root = GuardedRoot(allowed_hosts)
    stats = Endpoint(r.stats)
    stats.isLeaf = False
    stats.putChild(b"prometheus", Endpoint(r.prometheus))
    root.putChild(b"stats", stats)
    root.putChild(b"config_dump", Endpoint(r.config_dump))
    root.putChild(b"listeners", Endpoint(r.listeners))
    root.putChild(b"clusters", Endpoint(r.clusters))
    root.putChild(b"connections", Endpoint(r.connections))
    root.putChild(b"status", Endpoint(r.status))
    root.putChild(b"errors", Endpoint(r.errors))
    root.putChild(b"ready", Endpoint(r.ready))
    root.putChild(b"drain", Endpoint(r.drain, methods=(b"POST",)))
    root.putChild(b"reload", Endpoint(r.reload, methods=(b"POST",)))
    root.putChild(b"help", Endpoint(r.help))
    root.putChild(b"authz", Endpoint(r.authz))
    for path, name in ((b"", "index.html"), (b"app.js", "app.js"), (b"style.css", "style.css")):
        root.putChild(path, _static(name))
    return root


def metrics_root(gateway: GatewayState) -> Dir:
    """``/stats/prometheus`` and nothing else."""
    r = AdminResources(gateway)
    root = Dir()
    stats = Dir()
    stats.putChild(b"prometheus", Endpoint(r.prometheus))
    root.putChild(b"stats", stats)
    return root


def readiness_root(gateway: GatewayState) -> Dir:
    """``/healthz/ready``: 200 when ready, 503 otherwise, and nothing else."""

    def ready(request: Request) -> bytes:
        if gateway.ready:
            return _text(request, "")
        return _text(request, "not ready\n", http.SERVICE_UNAVAILABLE)

    root = Dir()
    healthz = Dir()
    healthz.putChild(b"ready", Endpoint(ready))
    root.putChild(b"healthz", healthz)
    return root
