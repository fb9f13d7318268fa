"""
The route table as plain data, its one dict form: what ``tsgate routes
--json`` prints, ``tsgate validate --json`` includes and the admin
``/config_dump`` serves.

Shaped like Envoy's config dump: listeners with their chains refer to
clusters by name, and the clusters (with endpoints) are listed once. Built
from the table's own model (:meth:`tsgate.routing.RouteTable.routes`,
:meth:`~tsgate.routing.RouteTable.clusters`).
"""

from __future__ import annotations

from typing import Any, Optional

from tsgate.routing import Cluster, Listener, Route, RouteEntry, RouteTable


def route_to_dict(route: Optional[Route]) -> Optional[dict[str, Any]]:
    if route is None:
        return None
    return {
        "name": route.name,
        "stat_prefix": route.stat_prefix,
        "destinations": [{"cluster": wc.cluster.name, "weight": wc.weight}
                         for wc in route.destinations],
        "idle_timeout": route.idle_timeout,
        "max_connection_duration": route.max_connection_duration,
        "source": None if route.source is None else {
            "file": route.source.file, "line": route.source.line,
            "resource": route.source.resource, "path": route.source.path},
    }


def cluster_to_dict(cluster: Cluster) -> dict[str, Any]:
    return {
        "name": cluster.name,
        "host": cluster.host,
        "port": cluster.port,
        "subset": cluster.subset,
        "resolution": cluster.resolution,
        "endpoints": [{"address": e.address, "port": e.port, "weight": e.weight,
                       "labels": dict(e.labels)} for e in cluster.endpoints],
        "connect_timeout": cluster.connect_timeout,
        "lb_policy": cluster.lb_policy,
        "max_connections": cluster.max_connections,
        "tls": None if cluster.tls is None else cluster.tls.to_dict(),
        # the rest of the upstream policy in force, in words (tsgate.upstream.policy)
        "policy": cluster.policy.describe() if cluster.policy is not None else [],
        "missing": cluster.missing,
    }


def chain_to_dict(entry: RouteEntry) -> dict[str, Any]:
    """An SNI chain: its names (``*``: catch-all), route and TLS termination if any."""
    out: dict[str, Any] = {"server_names": list(entry.server_names) or ["*"],
                           "route": route_to_dict(entry.route)}
    if entry.termination is not None:
        out["termination"] = entry.termination.to_dict()
    return out


def listener_to_dict(listener: Listener) -> dict[str, Any]:
    return {
        "name": listener.name,
        "bind": listener.bind,
        "port": listener.port,
        "inspect": listener.inspect,
        "protocols": list(listener.protocols),
        "port_names": list(listener.port_names),
        "annotations": dict(listener.annotations),
        "tls_chains": [chain_to_dict(e) for e in listener.routes() if e.chain is not None],
        "tcp_route": route_to_dict(listener.tcp_route),
    }


def table_to_dict(table: RouteTable) -> dict[str, Any]:
    """The whole table, JSON-ready (``json.dumps`` needs nothing else)."""
    return {
        "listeners": [listener_to_dict(listener) for listener in table.listeners],
        "clusters": [cluster_to_dict(c) for c in table.clusters()],
    }
