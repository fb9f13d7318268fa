"""
The admin server (Envoy's admin interface, reduced to what an L4 gateway
needs) and Istio's readiness endpoint, as twisted.web resources.

Both only *read* the gateway through :class:`tsgate.admin.state.GatewayState`,
except ``POST /drain`` and ``POST /reload``. The admin site is meant for
127.0.0.1 (the default endpoint in ``tsgate.tap``): it can stop the gateway.
Because a browser on the same machine can be made to talk to loopback, POSTs
carrying a foreign ``Origin`` are refused (cross-site form posts), and
requests whose ``Host`` is not an IP literal, ``localhost`` or an allowed
name are refused (DNS rebinding would otherwise let a web page read
``/config_dump``).

Endpoints (``GET /help`` lists them):

- ``/`` the status page (``static/index.html`` + ``app.js`` + ``style.css``);
- ``/stats`` Envoy's text (``?format=json``, ``?filter=<regex>``, ``?usedonly``);
- ``/stats/prometheus`` Prometheus text format 0.0.4;
- ``/config_dump`` loaded files, diagnostics, resources and the compiled table (JSON);
- ``/listeners``, ``/clusters`` Envoy-like text, or JSON with ``?format=json``;
- ``/connections`` live connections, per listener and per route (JSON), oldest first,
  one page at a time (``?limit=`` up to :data:`MAX_PAGE`, ``?offset=``);
- ``/status`` what the status page shows, in one JSON: version, uptime, last
  reload, totals and rates, listeners, clusters and endpoints with live counts;
- ``/errors`` recent errors, newest first (JSON);
- ``/ready`` 200 ``LIVE`` or 503; ``POST /drain``; ``POST /reload``.

:func:`make_metrics_site` is the separate, read-only metrics listener
(``--metrics``, Istio's ``:15090``): ``/stats/prometheus`` and nothing else.
"""

from __future__ import annotations

import heapq
import ipaddress
import json
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional, Union
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, pages
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tsgate.admin import prometheus, stats_text
from tsgate.admin.jsonable import to_jsonable
from tsgate.admin.state import ConnectionInfo, GatewayState
from tsgate.config.dump import table_to_dict
from tsgate.routing import Cluster, Route, RouteTable

log = Logger(namespace="tsgate.admin")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: How many recent errors a cluster shows in ``/clusters``.
CLUSTER_ERRORS = 5

#: ``/connections`` page size: the default, and the most one request may ask for.
DEFAULT_PAGE = 100
MAX_PAGE = 1000

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


def _host_allowed(host: Optional[bytes], allowed: Sequence[str]) -> bool:
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


class _Dir(Resource):
    """A resource whose unknown children are a plain 404 (twisted's default is deprecated)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def getChild(self, path: bytes, request: Request) -> Any:  # noqa: N802
        return pages.notFound()


class _Endpoint(_Dir):
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


class _GuardedRoot(_Dir):
    """Refuses unknown Host names before any child sees the request."""

    def __init__(self, allowed_hosts: Sequence[str]) -> None:
        super().__init__()
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:  # noqa: N802
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if not _host_allowed(request.getHeader(b"host"), self.allowed_hosts):
            return _Endpoint(_forbidden_host, methods=(b"GET", b"HEAD", b"POST", b"PUT",
                                                      b"DELETE", b"OPTIONS", b"PATCH"))
        child: Resource = super().getChildWithDefault(  # type: ignore[no-untyped-call]
            path, request)
        return child


def _forbidden_host(request: Request) -> bytes:
    return _text(request, "Host not allowed (admin is for localhost)\n", http.FORBIDDEN)


#: Content types of the status page's files.
STATIC_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                ".css": b"text/css; charset=utf-8"}


def _static(name: str) -> _Endpoint:
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

    return _Endpoint(serve)


class _QuietSite(Site):
    """A Site that logs requests at debug level instead of a combined log line each."""

    noisy = False

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)  # type: ignore[no-untyped-call]

    def log(self, request: Request) -> None:  # type: ignore[override]
        log.debug("{method} {uri} {code}", method=request.method, uri=request.uri,
                  code=request.code)


# ---------------------------------------------------------------------------------------------
# views (pure functions of the gateway state, shared by text and JSON renderings)


def _routes(table: RouteTable) -> Iterable[tuple[str, Route]]:
    for listener in table.listeners:
        for chain in listener.tls_chains:
            yield listener.name, chain.route
        if listener.tcp_route is not None:
            yield listener.name, listener.tcp_route


def _clusters(table: RouteTable) -> list[Cluster]:
    seen: dict[str, Cluster] = {}
    for _, route in _routes(table):
        for dest in route.destinations:
            seen.setdefault(dest.cluster.name, dest.cluster)
    return [seen[name] for name in sorted(seen)]


def _route_view(route: Route, active: int) -> dict[str, Any]:
    total = sum(d.weight for d in route.destinations) or 1
    return {
        "name": route.name,
        "active_connections": active,
        "destinations": [
            {"cluster": d.cluster.name, "weight": d.weight,
             "percent": round(100.0 * d.weight / total, 2)}
            for d in route.destinations
        ],
        "idle_timeout": route.idle_timeout,
        "max_connection_duration": route.max_connection_duration,
        "source": str(route.source) if route.source else None,
    }


def bound_addresses(gateway: GatewayState) -> dict[str, str]:
    """Listener name -> the address its socket really has (``--bind``, ``--endpoint``)."""
    method = getattr(gateway, "bound_addresses", None)
    return dict(method()) if callable(method) else {}


def listeners_view(gateway: GatewayState,
                   conns: Optional[list[ConnectionInfo]] = None) -> list[dict[str, Any]]:
    if conns is None:
        conns = list(gateway.connections())
    bound = bound_addresses(gateway)
    by_listener = Counter(c.listener for c in conns)
    # per (listener, route): one route can serve several listeners
    by_route = Counter((c.listener, c.route) for c in conns if c.route)
    out = []
    for listener in gateway.table.listeners:
        chains = [
            {"match": "sni:" + ",".join(chain.server_names) if chain.server_names else "sni:*",
             "server_names": list(chain.server_names),
             "route": _route_view(chain.route, by_route[listener.name, chain.route.name])}
            for chain in listener.tls_chains
        ]
        address = bound.get(listener.name)
        out.append({
            "name": listener.name,
            "bind": listener.bind,
            "port": listener.port,
            # where the socket really listens: --bind and --endpoint change it
            "address": address or f"{listener.bind}:{listener.port}",
            "inspect": listener.inspect,
            "protocols": list(listener.protocols),
            "active_connections": by_listener.get(listener.name, 0),
            "chains": chains,
            "tcp_route": (
                _route_view(listener.tcp_route, by_route[listener.name, listener.tcp_route.name])
                if listener.tcp_route is not None else None),
        })
    return out


def _cluster_stats(gateway: GatewayState, name: str) -> dict[str, float]:
    stats = gateway.stats
    out: dict[str, float] = {}
    for family in (stats.counters, stats.gauges):
        for stat, series in family.items():
            if not stat.startswith("cluster."):
                continue
            for key, value in series.items():
                if dict(key).get("cluster") == name:
                    short = stat[len("cluster."):]
                    out[short] = out.get(short, 0) + value
    return dict(sorted(out.items()))


def clusters_view(gateway: GatewayState,
                  conns: Optional[list[ConnectionInfo]] = None) -> list[dict[str, Any]]:
    if conns is None:
        conns = list(gateway.connections())
    errors = list(gateway.recent_errors)
    by_cluster: dict[str, list[ConnectionInfo]] = {}
    for c in conns:
        if c.cluster:
            by_cluster.setdefault(c.cluster, []).append(c)
    out = []
    for cluster in _clusters(gateway.table):
        mine = by_cluster.get(cluster.name, [])
        upstreams = Counter(c.upstream for c in mine if c.upstream)
        ep_bytes: dict[str, list[int]] = {}
        for c in mine:
            if c.upstream:
                pair = ep_bytes.setdefault(c.upstream, [0, 0])
                pair[0] += c.bytes_received
                pair[1] += c.bytes_sent
        endpoints = [
            {"address": ep.address, "port": ep.port, "weight": ep.weight,
             "active_connections": upstreams.get(f"{ep.address}:{ep.port}", 0),
             "bytes_received": ep_bytes.get(f"{ep.address}:{ep.port}", [0, 0])[0],
             "bytes_sent": ep_bytes.get(f"{ep.address}:{ep.port}", [0, 0])[1]}
            for ep in cluster.endpoints
        ]
        balancer = getattr(gateway, "balancer", None)
        policy = cluster.policy
        if balancer is not None:
            # the hosts in force (DNS names resolved), each with its state
            endpoints = balancer.host_views(cluster)
        last = [(t, m) for t, m in errors if cluster.name in m][-CLUSTER_ERRORS:]
        out.append({
            "name": cluster.name,
            "host": cluster.host,
            "port": cluster.port,
            "subset": cluster.subset,
            "resolution": cluster.resolution,
            "connect_timeout": cluster.connect_timeout,
            "lb_policy": cluster.lb_policy,
            "max_connections": cluster.max_connections,
            "policy": policy.describe() if policy is not None else [],
            "endpoints": endpoints,
            "active_connections": len(mine),
            # bytes of the connections open now (from clients / to clients)
            "bytes_received": sum(c.bytes_received for c in mine),
            "bytes_sent": sum(c.bytes_sent for c in mine),
            "upstreams": dict(sorted(upstreams.items())),
            "upstream_bytes": {a: {"bytes_received": b[0], "bytes_sent": b[1]}
                               for a, b in sorted(ep_bytes.items())},
            "stats": _cluster_stats(gateway, cluster.name),
            "last_errors": [{"time": t, "message": m} for t, m in reversed(last)],
        })
    return out


def connections_view(gateway: GatewayState, now: float, limit: int = DEFAULT_PAGE,
                     offset: int = 0) -> dict[str, Any]:
    """
    One page of live connections, oldest first. Only the page is sorted and
    serialised (``heapq.nsmallest``), so 50,000 connections cost a scan, not
    a sort and 19 MB of JSON.
    """
    everything = list(gateway.connections())
    limit = max(0, min(limit, MAX_PAGE))
    offset = max(0, offset)
    page = heapq.nsmallest(offset + limit, everything, key=lambda c: c.started)[offset:]
    return {
        "total": len(everything),
        "offset": offset,
        "limit": limit,
        "by_listener": dict(sorted(Counter(c.listener for c in everything).items())),
        "by_route": dict(sorted(Counter(c.route or "(choosing)" for c in everything).items())),
        "connections": [
            {"listener": c.listener, "route": c.route, "cluster": c.cluster,
             "upstream": c.upstream, "downstream": c.downstream, "sni": c.sni,
             "started": c.started, "duration": max(0.0, now - c.started),
             "bytes_received": c.bytes_received, "bytes_sent": c.bytes_sent,
             # optional: the real gateway says "inspecting", "connecting", "relaying"...
             "state": getattr(c, "state", None),
             # with --workers: the worker process that holds the connection
             "worker": getattr(c, "worker", None)}
            for c in page
        ],
    }


def errors_view(gateway: GatewayState) -> list[dict[str, Any]]:
    return [
        {"time": t, "iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)), "message": m}
        for t, m in reversed(list(gateway.recent_errors))
    ]


def config_dump(gateway: GatewayState) -> dict[str, Any]:
    """
    ``config``: what was loaded (files, diagnostics, resources; the
    ConfigResult's own ``to_dict`` when it has one); ``table``: the table in
    force now, in the shape ``tsgate routes --json`` prints.
    """
    config = gateway.config
    loaded: Optional[dict[str, Any]] = None
    error = None
    if config is not None and hasattr(config, "to_dict"):
        try:
            loaded = dict(config.to_dict())
            loaded.pop("table", None)  # the table in force is below
        except Exception as e:  # a bug in a serializer must not cost the whole dump
            log.failure("ConfigResult.to_dict failed; dumping generically")
            error = f"{type(e).__name__}: {e}"
    if config is not None and loaded is None:
        loaded = {
            "ok": getattr(config, "ok", None),
            "files": [str(f) for f in getattr(config, "files", ()) or ()],
            "diagnostics": [str(d) for d in getattr(config, "diagnostics", ()) or ()],
            "resources": to_jsonable(getattr(config, "resources", ()) or ()),
        }
        if error:
            loaded["dump_error"] = error
    table = table_to_dict(gateway.table)
    bound = bound_addresses(gateway)
    for listener in table.get("listeners", ()):
        if isinstance(listener, dict) and listener.get("name") in bound:
            listener["address"] = bound[listener["name"]]  # the real socket's address
    return {"config": loaded, "table": table}


# ---------------------------------------------------------------------------------------------
# text renderings (Envoy's admin style)


def listeners_text(views: list[dict[str, Any]]) -> str:
    return "".join(f"{v['name']}::{v['address']}\n" for v in views)


def clusters_text(views: list[dict[str, Any]]) -> str:
    lines = []
    for c in views:
        n = c["name"]
        lines.append(f"{n}::resolution::{c['resolution']}")
        lines.append(f"{n}::connect_timeout::{c['connect_timeout']}")
        lines.append(f"{n}::cx_active::{c['active_connections']}")
        for stat, value in c["stats"].items():
            lines.append(f"{n}::{stat}::{stats_text._fmt(value)}")
        lines.append(f"{n}::lb_policy::{c['lb_policy']}")
        for text in c.get("policy", ()):
            lines.append(f"{n}::policy::{text}")
        for ep in c["endpoints"]:
            addr = f"{ep['address']}:{ep['port']}"
            lines.append(f"{n}::{addr}::cx_active::{ep['active_connections']}")
            lines.append(f"{n}::{addr}::weight::{ep['weight']}")
            if "status" in ep:
                lines.append(f"{n}::{addr}::health_flags::{ep['status']}")
        listed = {f"{ep['address']}:{ep['port']}" for ep in c["endpoints"]}
        for addr, count in c["upstreams"].items():
            if addr not in listed:  # DNS-resolved upstreams the table does not list
                lines.append(f"{n}::{addr}::cx_active::{count}")
        for err in c["last_errors"]:
            lines.append(f"{n}::last_error::{err['message']}")
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------------------------
# the sites


class AdminResources:
    """The handlers, bound to one gateway; separate from the tree to be easy to read."""

    def __init__(self, gateway: GatewayState, now: Callable[[], float] = time.time) -> None:
        self.gateway = gateway
        self.now = now
        self.draining = False
        self.created = now()
        #: (time, totals) of recent /status requests, for the rates
        self._samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=64)

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
        return _json(request, config_dump(self.gateway))

    def listeners(self, request: Request) -> bytes:
        views = listeners_view(self.gateway)
        if _arg(request, "format") == "json":
            return _json(request, {"listeners": views})
        return _text(request, listeners_text(views))

    def clusters(self, request: Request) -> bytes:
        views = clusters_view(self.gateway)
        if _arg(request, "format") == "json":
            return _json(request, {"clusters": views})
        return _text(request, clusters_text(views))

    def connections(self, request: Request) -> bytes:
        try:
            limit = int(_arg(request, "limit") or DEFAULT_PAGE)
            offset = int(_arg(request, "offset") or 0)
        except ValueError:
            return _text(request, "bad request: limit and offset are integers\n",
                         http.BAD_REQUEST)
        return _json(request, connections_view(self.gateway, self.now(), limit, offset))

    def status(self, request: Request) -> bytes:
        return _json(request, self.status_view())

    def status_view(self) -> dict[str, Any]:
        """Everything the status page shows but the connection list, from one pass."""
        from tsgate import __version__

        now = self.now()
        conns = list(self.gateway.connections())
        stats = self.gateway.stats
        totals = {
            "connections": stats.total("listener.downstream_cx_total"),
            "bytes_received": stats.total("istio_tcp_received_bytes_total"),
            "bytes_sent": stats.total("istio_tcp_sent_bytes_total"),
            "upstream_connect_failures": stats.total("cluster.upstream_cx_connect_fail"),
            "no_route": stats.total("listener.no_filter_chain_match"),
        }
        rates: dict[str, Optional[float]] = dict.fromkeys(totals)
        # the oldest sample of the last minute at least 0.5 s old
        base = next(((t, v) for t, v in self._samples if 0.5 <= now - t <= 60.0), None)
        if base is not None:
            span = now - base[0]
            rates = {k: round((totals[k] - base[1].get(k, 0)) / span, 3) for k in totals}
        self._samples.append((now, totals))
        started = getattr(self.gateway, "started_at", None) or self.created
        return {
            "version": __version__,
            "started": started,
            "uptime": max(0.0, now - started),
            "last_reload": getattr(self.gateway, "last_reload", None),
            "active_connections": len(conns),
            "totals": totals,
            "rates_per_second": rates,
            "listeners": listeners_view(self.gateway, conns),
            "clusters": clusters_view(self.gateway, conns),
        }

    def errors(self, request: Request) -> bytes:
        return _json(request, {"errors": errors_view(self.gateway)})

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


def make_admin_site(gateway: GatewayState, allowed_hosts: Sequence[str] = (),
                    now: Callable[[], float] = time.time) -> Site:
    """
    The admin site. ``allowed_hosts`` are extra ``Host`` names accepted
    besides IP literals and ``localhost`` (for an admin put behind a name).
    """
    r = AdminResources(gateway, now)
    root = _GuardedRoot(allowed_hosts)
    stats = _Endpoint(r.stats)
    stats.isLeaf = False
    stats.putChild(b"prometheus", _Endpoint(r.prometheus))
    root.putChild(b"stats", stats)
    root.putChild(b"config_dump", _Endpoint(r.config_dump))
    root.putChild(b"listeners", _Endpoint(r.listeners))
    root.putChild(b"clusters", _Endpoint(r.clusters))
    root.putChild(b"connections", _Endpoint(r.connections))
    root.putChild(b"status", _Endpoint(r.status))
    root.putChild(b"errors", _Endpoint(r.errors))
    root.putChild(b"ready", _Endpoint(r.ready))
    root.putChild(b"drain", _Endpoint(r.drain, methods=(b"POST",)))
    root.putChild(b"reload", _Endpoint(r.reload, methods=(b"POST",)))
    root.putChild(b"help", _Endpoint(r.help))
    root.putChild(b"authz", _Endpoint(r.authz))
    for path, name in ((b"", "index.html"), (b"app.js", "app.js"), (b"style.css", "style.css")):
        root.putChild(path, _static(name))
    site = _QuietSite(root)
    site.displayTracebacks = False
    site.admin = r  # type: ignore[attr-defined]  # for tests and the lead's wiring
    return site


def make_metrics_site(gateway: GatewayState) -> Site:
    """
    The metrics listener (``--metrics``, Istio's ``:15090``): read-only
    ``/stats/prometheus`` and nothing else, so it can listen on the pod IP for
    Prometheus without exposing ``POST /drain`` or ``/config_dump``.
    """
    r = AdminResources(gateway)
    root = _Dir()
    stats = _Dir()
    stats.putChild(b"prometheus", _Endpoint(r.prometheus))
    root.putChild(b"stats", stats)
    site = _QuietSite(root)
    site.displayTracebacks = False
    return site


def make_readiness_site(gateway: GatewayState) -> Site:
    """
    Istio's ``:15021/healthz/ready``: 200 when ready, 503 otherwise, and
    nothing else (kubelet probes it on the pod IP, so it must reveal nothing).
    """

    def ready(request: Request) -> bytes:
        if gateway.ready:
            return _text(request, "")
        return _text(request, "not ready\n", http.SERVICE_UNAVAILABLE)

    root = _Dir()
    healthz = _Dir()
    healthz.putChild(b"ready", _Endpoint(ready))
    root.putChild(b"healthz", healthz)
    site = _QuietSite(root)
    site.displayTracebacks = False
    return site
