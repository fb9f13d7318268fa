"""Every series a table can produce is exported at 0 from the start, each with a real HELP."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tsgate.admin.catalog import declare_table
from tsgate.admin.prometheus import DESCRIPTIONS, render
from tsgate.stats import Stats

from .fakes import ECHO, SNI1, TABLE, TCP_ROUTE


def test_declared_at_zero_per_listener_cluster_route_and_plugin() -> None:
    s = Stats()
    declare_table(s, TABLE, ["tls", "postgres"])
    fams = {f.name: f for f in text_string_to_metric_families(render(s))}
    nr = {x.labels["listener_address"]: x.value
          for x in fams["envoy_listener_no_filter_chain_match"].samples}
    assert nr == {"0.0.0.0_31400": 0, "0.0.0.0_31401": 0}
    sni = {x.labels["listener_address"] for x in fams["envoy_tls_inspector_sni_found"].samples}
    assert sni == {"0.0.0.0_31400"}  # only the listener that inspects
    fails = {x.labels["cluster_name"] for x in
             fams["envoy_cluster_upstream_cx_connect_fail"].samples}
    assert {ECHO.name, SNI1.name} <= fails
    assert [x.value for x in fams["tsgate_config_reload_failed"].samples] == [0]
    assert {x.labels["plugin"] for x in fams["tsgate_plugin_crashed"].samples} == \
        {"tls", "postgres"}
    idle = {x.labels["route"] for x in fams["envoy_tcp_idle_timeout"].samples}
    assert TCP_ROUTE.name in idle
    opened = fams["istio_tcp_connections_opened"].samples
    assert {x.labels["destination_service"] for x in opened} >= {ECHO.host, SNI1.host}
    counts = [x.value for x in fams["envoy_listener_downstream_cx_length_ms"].samples
              if x.name.endswith("_count")]
    assert counts == [0, 0]


def test_declaring_again_keeps_the_counts() -> None:
    s = Stats()
    declare_table(s, TABLE)
    s.inc("listener.no_filter_chain_match", 3, listener="0.0.0.0_31400")
    declare_table(s, TABLE)
    assert s.get("listener.no_filter_chain_match", listener="0.0.0.0_31400") == 3


def test_every_declared_stat_has_its_own_help_text() -> None:
    s = Stats()
    declare_table(s, TABLE, ["tls"])
    names = set(s.counters) | set(s.gauges) | set(s.histograms)
    assert names - set(DESCRIPTIONS) == set()
    for line in render(s).splitlines():
        if line.startswith("# HELP "):
            assert not line.split(" ", 3)[3].startswith("tsgate "), line
