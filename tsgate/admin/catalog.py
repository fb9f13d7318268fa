"""
Every series the gateway can produce for a route table, declared at 0.

A counter that appears only after its first increment cannot be alerted on
(``increase(envoy_config_reload_failed[5m]) > 0`` sees no change from
"absent" to 1), so at startup and after every reload the service declares,
for the table in force, each listener's, cluster's and route's counters and
gauges at 0 and each listener's connection-length histogram empty. Plugin
stats whose names depend on traffic (``redis.command.get``) are not
enumerable and still appear on first use.

Declaring never changes a value that exists: ``setdefault`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tsgate.stats import Histogram, Stats
from tsgate.upstream.balancer import istio_metric_labels

#: Unlabelled counters of the whole gateway.
GATEWAY_COUNTERS = ("config.reload_success", "config.reload_failed", "gateway.drain_cut")

#: Counters per listener (label ``listener``).
LISTENER_COUNTERS = (
    "listener.downstream_cx_total",
    "listener.no_filter_chain_match",
    "listener.downstream_pre_cx_timeout",
    "plugin.observer_crashed",
)

#: Counters per listener that inspects the first bytes (TLS chains).
INSPECTOR_COUNTERS = (
    "tls_inspector.tls_found",
    "tls_inspector.tls_not_found",
    "tls_inspector.sni_found",
    "tls_inspector.sni_not_found",
    "tls_inspector.alpn_found",
    "tls_inspector.parse_error",
    "tls_inspector.client_hello_too_large",
    "tls_inspector.read_timeout",
    "tls_inspector.connection_closed",
)

#: Counters per cluster (label ``cluster``).
CLUSTER_COUNTERS = (
    "cluster.upstream_cx_total",
    "cluster.upstream_cx_connect_fail",
    "cluster.upstream_cx_connect_timeout",
    "cluster.upstream_cx_overflow",
    "cluster.upstream_cx_none_healthy",
)

#: Counters per route (label ``route``).
ROUTE_COUNTERS = ("tcp.idle_timeout", "tcp.max_downstream_connection_duration")

#: Istio's standard TCP counters, per destination (response_flags "-" for the closed one).
ISTIO_COUNTERS = (
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
    "istio_tcp_received_bytes_total",
    "istio_tcp_sent_bytes_total",
)


def declare_table(stats: Stats, table: Any, plugins: Iterable[str] = ()) -> None:
    """Declare at 0 every series ``table`` (and the named hint plugins) can produce."""
    for name in GATEWAY_COUNTERS:
        stats.declare(name)
    for plugin in plugins:
        stats.declare("plugin.crashed", plugin=plugin)
    for listener in table.listeners:
        for name in LISTENER_COUNTERS:
            stats.declare(name, listener=listener.name)
        if listener.inspect:
            for name in INSPECTOR_COUNTERS:
                stats.declare(name, listener=listener.name)
        key = Stats.label_key(listener=listener.name)
        stats.gauges.setdefault("listener.downstream_cx_active", {}).setdefault(key, 0)
        stats.histograms.setdefault("listener.downstream_cx_length_seconds", {}) \
            .setdefault(key, Histogram())
    seen: set[str] = set()
    for route in (entry.route for entry in table.routes()):
        for name in ROUTE_COUNTERS:
            stats.declare(name, route=route.name)
        for destination in route.destinations:
            cluster = destination.cluster
            if cluster.name in seen:
                continue
            seen.add(cluster.name)
            for name in CLUSTER_COUNTERS:
                stats.declare(name, cluster=cluster.name)
            stats.gauges.setdefault("cluster.upstream_cx_active", {}) \
                .setdefault(Stats.label_key(cluster=cluster.name), 0)
            labels = dict(istio_metric_labels(cluster), response_flags="-")
            for name in ISTIO_COUNTERS:
                stats.declare(name, **labels)
