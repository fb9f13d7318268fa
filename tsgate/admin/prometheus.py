"""
Prometheus text exposition (format 0.0.4) of a :class:`tsgate.stats.Stats`.

Why not ``prometheus_client``'s registry: it appends ``_total`` to every
counter, and Envoy's counters (``envoy_cluster_upstream_cx_connect_fail``)
have no such suffix, so dashboards written for an Istio ingress gateway
would not find them. The format is small; writing it here keeps the names
exactly as Istio and Envoy expose them and the gateway free of another
runtime dependency. Tests read the output back with
``prometheus_client.parser``.

Naming:

- Stats names without dots (``istio_tcp_connections_opened_total``) are
  Prometheus names already and are exposed as they are.
- Dotted Envoy names (``cluster.upstream_cx_connect_fail``) become
  ``envoy_cluster_upstream_cx_connect_fail``, as Envoy's
  ``/stats/prometheus`` does. The labels that Envoy carries in the dotted
  name get the tag names Istio's bootstrap gives them (``cluster`` ->
  ``cluster_name``, ``listener`` -> ``listener_address``, ``stat_prefix``
  -> ``tcp_prefix``), so Istio's Grafana queries work unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from tsgate.stats import Histogram, LabelKey, Stats

#: Label renames for Envoy-style (dotted) stats: Istio's stats tag names.
ENVOY_TAG_NAMES = {
    "cluster": "cluster_name",
    "listener": "listener_address",
    "stat_prefix": "tcp_prefix",
}

#: HELP text for the metrics the data path records; others get a generic one.
DESCRIPTIONS = {
    "istio_tcp_connections_opened_total": "Total TCP connections opened (Istio standard metric).",
    "istio_tcp_connections_closed_total": "Total TCP connections closed (Istio standard metric).",
    "istio_tcp_sent_bytes_total": "Bytes sent toward the client during TCP connections.",
    "istio_tcp_received_bytes_total": "Bytes received from the client during TCP connections.",
    "listener.no_filter_chain_match": "Connections that matched no filter chain (NR).",
    "listener.downstream_cx_total": "Connections accepted by the listener.",
    "listener.downstream_cx_active": "Connections open on the listener.",
    "listener.downstream_pre_cx_timeout": "Connections closed by the listener-filter timeout.",
    "tls_inspector.sni_found": "ClientHellos that carried a server name.",
    "tls_inspector.sni_not_found": "ClientHellos without a server name.",
    "tls_inspector.tls_found": "Connections whose first bytes were a TLS ClientHello.",
    "tls_inspector.tls_not_found": "Connections whose first bytes were not TLS.",
    "tls_inspector.client_hello_too_large": "ClientHellos larger than the inspection cap.",
    "tls_inspector.read_timeout": "Inspections that timed out waiting for client bytes.",
    "cluster.upstream_cx_total": "Upstream connections attempted.",
    "cluster.upstream_cx_active": "Upstream connections open.",
    "cluster.upstream_cx_connect_fail": "Upstream connection failures (UF).",
    "cluster.upstream_cx_connect_timeout": "Upstream connection timeouts.",
    "tcp.idle_timeout": "Connections closed by the route's idle timeout.",
}

_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(stat: str) -> str:
    """The Prometheus name of a stats name (see the module docstring)."""
    if "." in stat:
        stat = "envoy_" + stat.replace(".", "_")
    name = _INVALID_NAME.sub("_", stat)
    if name[:1].isdigit():
        name = "_" + name
    return name


def label_name(stat: str, label: str) -> str:
    if "." in stat:
        label = ENVOY_TAG_NAMES.get(label, label)
    name = _INVALID_LABEL.sub("_", label)
    if name[:1].isdigit() or name.startswith("__"):
        name = "_" + name.lstrip("_")
    return name


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(stat: str, key: LabelKey, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [(label_name(stat, k), v) for k, v in key]
    pairs.extend(extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in pairs) + "}"


def _header(out: list[str], name: str, stat: str, kind: str) -> None:
    help_text = DESCRIPTIONS.get(stat) or DESCRIPTIONS.get(_generic(stat)) or f"tsgate {stat}"
    out.append(f"# HELP {name} {escape_help(help_text)}")
    out.append(f"# TYPE {name} {kind}")


def _generic(stat: str) -> str:
    """``tcp.<prefix>.idle_timeout`` style names fall back to ``tcp.idle_timeout``."""
    parts = stat.split(".")
    return f"{parts[0]}.{parts[-1]}" if len(parts) > 2 else stat


def _histogram_lines(out: list[str], name: str, stat: str, key: LabelKey, hist: Histogram) -> None:
    cumulative = 0
    for bound, count in zip(hist.buckets, hist.counts):
        cumulative += count
        le = repr(float(bound))  # "10.0", as the Prometheus client libraries write it
        out.append(f"{name}_bucket{_labels(stat, key, [('le', le)])} {cumulative}")
    cumulative += hist.counts[-1]
    out.append(f"{name}_bucket{_labels(stat, key, [('le', '+Inf')])} {cumulative}")
    out.append(f"{name}_sum{_labels(stat, key)} {format_value(hist.sum)}")
    out.append(f"{name}_count{_labels(stat, key)} {hist.count}")


def render(stats: Stats) -> str:
    """
    The whole registry in Prometheus text format.

    One family per metric name; if two stats map to the same Prometheus
    name (a counter and a gauge, or ``a.b`` and ``a_b``), the first one
    (counters, then gauges, then histograms) keeps it and the others are
    left out rather than producing a file a scraper rejects.
    """
    out: list[str] = []
    seen: set[str] = set()

    def claim(name: str, *suffixes: str) -> bool:
        names = [name] + [name + suffix for suffix in suffixes]
        if any(n in seen for n in names):
            return False
        seen.update(names)
        return True

    for stat in sorted(stats.counters):
        name = metric_name(stat)
        if not claim(name):
            continue
        _header(out, name, stat, "counter")
        for key, value in sorted(stats.counters[stat].items()):
            out.append(f"{name}{_labels(stat, key)} {format_value(value)}")
    for stat in sorted(stats.gauges):
        name = metric_name(stat)
        if not claim(name):
            continue
        _header(out, name, stat, "gauge")
        for key, value in sorted(stats.gauges[stat].items()):
            out.append(f"{name}{_labels(stat, key)} {format_value(value)}")
    for stat in sorted(stats.histograms):
        name = metric_name(stat)
        if not claim(name, "_bucket", "_sum", "_count"):
            continue
        _header(out, name, stat, "histogram")
        for key, hist in sorted(stats.histograms[stat].items(), key=lambda kv: kv[0]):
            _histogram_lines(out, name, stat, key, hist)
    return "\n".join(out) + "\n" if out else ""


#: The Content-Type Prometheus expects for this format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
