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
- tsgate's own stats (``config.*``, ``gateway.*``, ``plugin.*``: Envoy has
  no such stats) get ``tsgate_`` instead: ``tsgate_config_reload_failed``.
- Envoy's duration histograms are in milliseconds (``downstream_cx_length_ms``);
  the registry records seconds (``listener.downstream_cx_length_seconds``), so
  those are exported as ``envoy_listener_downstream_cx_length_ms`` with the
  buckets and the sum scaled to milliseconds.
- Istio's standard metrics (``istio_*``) carry Istio's whole standard label
  set; labels tsgate has no value for are ``"unknown"``, as Istio writes them.

:func:`render_all` adds ``tsgate_build_info`` and the ``process_*`` metrics
(the names of Prometheus' client libraries) to the registry's.
"""

from __future__ import annotations

import math
import os
import platform
import re
import resource
from collections.abc import Iterable
from typing import Optional

from tsgate.stats import Histogram, LabelKey, Stats

#: Label renames for Envoy-style (dotted) stats: Istio's stats tag names.
ENVOY_TAG_NAMES = {
    "cluster": "cluster_name",
    "listener": "listener_address",
    "stat_prefix": "tcp_prefix",
}

#: Prefixes of tsgate's own stats, exported as ``tsgate_*`` (Envoy has none of these).
TSGATE_PREFIXES = ("config.", "gateway.", "plugin.", "workers.")

#: Histograms the registry keeps in seconds whose Envoy name is in milliseconds.
SECONDS_TO_MS = {"listener.downstream_cx_length_seconds": "listener.downstream_cx_length_ms"}

#: Istio's standard TCP metric labels, in Istio's order, with the value used when
#: the registry has none (tsgate has no mesh identity, no peer metadata exchange).
ISTIO_STANDARD_LABELS = (
    "reporter", "source_workload", "source_workload_namespace", "source_principal",
    "source_app", "source_version", "source_canonical_service", "source_canonical_revision",
    "source_cluster", "destination_workload", "destination_workload_namespace",
    "destination_principal", "destination_app", "destination_version",
    "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_canonical_service", "destination_canonical_revision", "destination_cluster",
    "request_protocol", "response_flags", "connection_security_policy",
)

#: HELP text for every stat the gateway records (tested: none may fall back to a
#: placeholder); plugin stats (``redis.command.get``) get a sentence built from the name.
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
    "tls_inspector.client_hello_too_large":
        "ClientHellos larger than the TLS parser's max_bytes (connection closed).",
    "tls_inspector.read_timeout": "Inspections that timed out waiting for client bytes.",
    "cluster.upstream_cx_total": "Upstream connections attempted.",
    "cluster.upstream_cx_active": "Upstream connections open.",
    "cluster.upstream_cx_connect_fail": "Upstream connection failures (UF).",
    "cluster.upstream_cx_connect_timeout": "Upstream connection timeouts.",
    "tcp.idle_timeout": "Connections closed by the route's idle timeout.",
    "tcp.max_downstream_connection_duration":
        "Connections closed by the route's maximum connection duration.",
    "listener.downstream_cx_length_seconds":
        "Downstream connection lengths, in milliseconds.",
    "tls_inspector.alpn_found": "ClientHellos that carried an ALPN extension.",
    "tls_inspector.parse_error":
        "Connections whose ClientHello was malformed (then handled as not TLS).",
    "tls_inspector.connection_closed":
        "Connections closed by the client while the ClientHello was inspected.",
    "cluster.upstream_cx_overflow":
        "Connections refused because the cluster's maxConnections was reached (UO).",
    "cluster.upstream_cx_none_healthy":
        "Connections refused because the cluster had no endpoint (UH).",
    "config.reload_success": "Configuration reloads that took effect.",
    "config.reload_failed":
        "Configuration reloads refused (errors); the running configuration was kept.",
    "gateway.drain_cut": "Connections still open when a drain period ended, then closed.",
    "plugin.crashed": "Exceptions raised by a protocol hint parser (connection handled "
                      "as if the parser had not matched).",
    "plugin.observer_crashed": "Exceptions raised by a stream observer (observer dropped "
                               "for that connection).",
}

_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(stat: str) -> str:
    """The Prometheus name of a stats name (see the module docstring)."""
    stat = SECONDS_TO_MS.get(stat, stat)
    if stat.startswith(TSGATE_PREFIXES):
        stat = "tsgate_" + stat.replace(".", "_")
    elif "." in stat:
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
    if stat.startswith("istio_"):
        have = dict(key)
        pairs = [(k, have.pop(k, "unknown")) for k in ISTIO_STANDARD_LABELS]
        pairs.extend((label_name(stat, k), v) for k, v in sorted(have.items()))
    else:
        pairs = [(label_name(stat, k), v) for k, v in key]
    pairs.extend(extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in pairs) + "}"


def describe(stat: str) -> str:
    """The HELP text of a stat: its own, its family's, or one built from a plugin stat's name."""
    known = DESCRIPTIONS.get(stat) or DESCRIPTIONS.get(_generic(stat))
    if known:
        return known
    protocol, _, rest = stat.partition(".")
    if rest:
        what = rest.replace(".", " ").replace("_", " ")
        return f"{protocol} protocol plugin: {what} (per listener)."
    return f"{stat.replace('_', ' ')}."


def _header(out: list[str], name: str, stat: str, kind: str) -> None:
    help_text = describe(stat)
    out.append(f"# HELP {name} {escape_help(help_text)}")
    out.append(f"# TYPE {name} {kind}")


def _generic(stat: str) -> str:
    """``tcp.<prefix>.idle_timeout`` style names fall back to ``tcp.idle_timeout``."""
    parts = stat.split(".")
    return f"{parts[0]}.{parts[-1]}" if len(parts) > 2 else stat


def _histogram_lines(out: list[str], name: str, stat: str, key: LabelKey, hist: Histogram,
                     scale: float = 1.0) -> None:
    cumulative = 0
    for bound, count in zip(hist.buckets, hist.counts):
        cumulative += count
        le = repr(float(bound) * scale)  # "10.0", as the Prometheus client libraries write it
        out.append(f"{name}_bucket{_labels(stat, key, [('le', le)])} {cumulative}")
    cumulative += hist.counts[-1]
    out.append(f"{name}_bucket{_labels(stat, key, [('le', '+Inf')])} {cumulative}")
    out.append(f"{name}_sum{_labels(stat, key)} {format_value(hist.sum * scale)}")
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
        scale = 1000.0 if stat in SECONDS_TO_MS else 1.0
        for key, hist in sorted(stats.histograms[stat].items(), key=lambda kv: kv[0]):
            _histogram_lines(out, name, stat, key, hist, scale)
    return "\n".join(out) + "\n" if out else ""


def build_info(version: str) -> str:
    """``tsgate_build_info``: 1, with the versions as labels (the ``*_build_info`` idiom)."""
    import twisted

    labels = {"version": version, "python": platform.python_version(),
              "twisted": twisted.__version__}
    text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
    return ("# HELP tsgate_build_info tsgate's version, and the Python and Twisted it runs on.\n"
            "# TYPE tsgate_build_info gauge\n"
            f"tsgate_build_info{{{text}}} 1\n")


def _proc_stat() -> Optional[list[str]]:
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()  # fields from 3 (state) on


def process_metrics() -> str:
    """
    The ``process_*`` metrics of Prometheus' client libraries (same names, units
    and HELP), from /proc where there is one, else from ``resource``.
    """
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {format_value(value)}")

    usage = resource.getrusage(resource.RUSAGE_SELF)
    metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in "
           "seconds.", usage.ru_utime + usage.ru_stime)
    fields = _proc_stat()
    if fields is not None:
        page = os.sysconf("SC_PAGE_SIZE")
        ticks = os.sysconf("SC_CLK_TCK")
        metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
               float(fields[20]))
        metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               float(fields[21]) * page)
        try:
            with open("/proc/stat", "rb") as f:
                btime = next(float(line.split()[1]) for line in f if line.startswith(b"btime"))
            metric("process_start_time_seconds", "gauge", "Start time of the process since "
                   "unix epoch in seconds.", btime + float(fields[19]) / ticks)
        except (OSError, StopIteration, ValueError):
            pass
        try:
            metric("process_open_fds", "gauge", "Number of open file descriptors.",
                   len(os.listdir("/proc/self/fd")))
        except OSError:
            pass
    else:  # no /proc: what resource knows (ru_maxrss is KiB on Linux, bytes on macOS)
        metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               usage.ru_maxrss * (1 if platform.system() == "Darwin" else 1024))
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", soft)
    return "\n".join(lines) + "\n"


def render_all(stats: Stats, version: Optional[str] = None) -> str:
    """What ``/stats/prometheus`` serves: the registry, ``tsgate_build_info``, ``process_*``."""
    from tsgate import __version__

    return render(stats) + build_info(version or __version__) + process_metrics()


#: The Content-Type Prometheus expects for this format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
