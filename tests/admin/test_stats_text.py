"""Envoy's plain /stats rendering: labels folded back into dotted names."""

from __future__ import annotations

from tsgate.admin.stats_text import quantile, render_json, render_text
from tsgate.stats import Stats


def test_envoy_flattening():
    s = Stats()
    s.inc("cluster.upstream_cx_connect_fail", 3, cluster="outbound|2701||echo")
    s.inc("listener.no_filter_chain_match", listener="0.0.0.0_31400")
    s.inc("tls_inspector.sni_found", 2)
    s.inc("istio_tcp_connections_opened_total", 1, reporter="source", response_flags="-")
    s.gauge_set("cluster.upstream_cx_active", 1, cluster="outbound|2701||echo")
    lines = render_text(s).splitlines()
    assert lines == [
        "cluster.outbound|2701||echo.upstream_cx_active: 1",
        "cluster.outbound|2701||echo.upstream_cx_connect_fail: 3",
        'istio_tcp_connections_opened_total{reporter="source",response_flags="-"}: 1',
        "listener.0.0.0.0_31400.no_filter_chain_match: 1",
        "tls_inspector.sni_found: 2",
    ]
    assert render_text(s, filter_re="^listener").splitlines() == [
        "listener.0.0.0.0_31400.no_filter_chain_match: 1"]


def test_used_only_and_histograms():
    s = Stats()
    s.declare("tls_inspector.read_timeout")
    for v in (0.002, 0.002, 0.2, 20.0):
        s.observe("tcp.downstream_cx_length", v, stat_prefix="p")
    assert render_text(s, used_only=True).splitlines() == [
        "tcp.p.downstream_cx_length: count=4 sum=20.204 P50=0.005 P90=60 P99=60"]
    data = render_json(s)
    assert data["stats"] == [{"name": "tls_inspector.read_timeout", "value": 0}]
    (hist,) = data["histograms"]
    assert hist["count"] == 4 and hist["buckets"][-1] == {"le": "+Inf", "count": 4}


def test_quantile_of_empty_and_overflow():
    assert quantile((1.0, 2.0), [0, 0, 0], 0.5) == 0.0
    assert quantile((1.0, 2.0), [0, 0, 5], 0.5) == 2.0
