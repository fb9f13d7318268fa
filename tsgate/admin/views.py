"""
What each admin page shows, as plain data: pure functions of the gateway
state (:class:`tsgate.admin.state.GatewayState`) and the route table's model
(:meth:`tsgate.routing.RouteTable.routes`, ``clusters``), with no request,
no reactor and no sockets, so each is unit-testable with a plain call.
:mod:`tsgate.admin.resources` serves them as JSON, or as Envoy's admin text
(:func:`listeners_text`, :func:`clusters_text`).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, Optional

from twisted.logger import Logger

from tsgate.admin import stats_text
from tsgate.admin.jsonable import to_jsonable
from tsgate.admin.state import ConnectionInfo, GatewayState
from tsgate.config.dump import table_to_dict
from tsgate.routing import Route

log = Logger(namespace="tsgate.admin")

#: How many recent errors a cluster shows in ``/clusters``.
CLUSTER_ERRORS = 5

#: ``/connections`` page size: the default, and the most one request may ask for.
DEFAULT_PAGE = 100
MAX_PAGE = 1000

#: The ``/status`` totals: name -> the stat they add up.
STATUS_TOTALS = (
    ("connections", "listener.downstream_cx_total"),
    ("bytes_received", "istio_tcp_received_bytes_total"),
    ("bytes_sent", "istio_tcp_sent_bytes_total"),
    ("upstream_connect_failures", "cluster.upstream_cx_connect_fail"),
    ("no_route", "listener.no_filter_chain_match"),
)

#: A ``/status`` sample: (time, totals).
Sample = tuple[float, dict[str, float]]


def route_view(route: Route, active: int) -> dict[str, Any]:
    """One route as the status page shows it, with its live connection count."""
    return {
        "name": route.name,
        "active_connections": active,
        "destinations": [
            {"cluster": d.cluster.name, "weight": d.weight,
             "percent": round(route.percent(d), 2)}
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
    """``/listeners``: each listener, its chains (``Listener.routes``) and live counts."""
    if conns is None:
        conns = list(gateway.connections())
    bound = bound_addresses(gateway)
    by_listener = Counter(c.listener for c in conns)
    # per (listener, route): one route can serve several listeners
    by_route = Counter((c.listener, c.route) for c in conns if c.route)
    out = []
    for listener in gateway.table.listeners:
        chains = []
        tcp_route = None
        for entry in listener.routes():
            view = route_view(entry.route, by_route[listener.name, entry.route.name])
            if entry.chain is None:
                tcp_route = view
            else:
                chains.append({"match": entry.match, "server_names": list(entry.server_names),
                               "route": view})
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
            "tcp_route": tcp_route,
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
    """``/clusters``: every cluster of the table (by name), its hosts, live counts, errors."""
    if conns is None:
        conns = list(gateway.connections())
    errors = list(gateway.recent_errors)
    by_cluster: dict[str, list[ConnectionInfo]] = {}
    for c in conns:
        if c.cluster:
            by_cluster.setdefault(c.cluster, []).append(c)
    out = []
    for cluster in sorted(gateway.table.clusters(), key=lambda c: c.name):
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
    """``/errors``: recent errors, newest first."""
    return [
        {"time": t, "iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)), "message": m}
        for t, m in reversed(list(gateway.recent_errors))
    ]


def config_dump(gateway: GatewayState) -> dict[str, Any]:
    """
    ``config``: what was loaded (files, diagnostics, resources; the
    ConfigResult's own ``to_dict`` when it has one); ``table``: the table in
    force now, in the shape ``tsgate routes --json`` prints
    (:func:`tsgate.config.dump.table_to_dict`), with each listener's real
    socket address where the gateway knows it.
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


def status_totals(gateway: GatewayState) -> dict[str, float]:
    """The counters the status page adds up (``/status`` ``totals``)."""
    stats = gateway.stats
    return {name: stats.total(stat) for name, stat in STATUS_TOTALS}


def rates_per_second(totals: dict[str, float], samples: Iterable[Sample],
                     now: float) -> dict[str, Optional[float]]:
    """
    Each total's rate since the oldest sample of the last minute at least
    0.5 s old (None each while there is no such sample).
    """
    base = next(((t, v) for t, v in samples if 0.5 <= now - t <= 60.0), None)
    if base is None:
        return dict.fromkeys(totals)
    span = now - base[0]
    return {k: round((totals[k] - base[1].get(k, 0)) / span, 3) for k in totals}


def status_view(gateway: GatewayState, now: float, started: float,
                totals: dict[str, float], rates: dict[str, Optional[float]]) -> dict[str, Any]:
    """``/status``: everything the status page shows but the connection list, from one pass."""
    from tsgate import __version__

    conns = list(gateway.connections())
    return {
        "version": __version__,
        "started": started,
        "uptime": max(0.0, now - started),
        "last_reload": getattr(gateway, "last_reload", None),
        "active_connections": len(conns),
        "totals": totals,
        "rates_per_second": rates,
        "listeners": listeners_view(gateway, conns),
        "clusters": clusters_view(gateway, conns),
    }


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
