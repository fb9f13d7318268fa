"""
Prometheus exposition of tsgate.stats.Stats, read back by prometheus_client's parser.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tsgate.admin.prometheus import ISTIO_STANDARD_LABELS, metric_name, render
from tsgate.stats import Stats

ISTIO_LABELS = dict(
    reporter="source",
    source_workload="unknown",
    source_workload_namespace="unknown",
    destination_service="tcp-echo-service.default.svc.cluster.local",
    destination_service_name="tcp-echo-service",
    destination_service_namespace="default",
    request_protocol="tcp",
    response_flags="-",
    connection_security_policy="unknown",
)


def families(stats: Stats) -> dict:
    return {f.name: f for f in text_string_to_metric_families(render(stats))}


def test_istio_tcp_metrics_keep_their_names_and_labels():
    """The four Istio TCP metrics are exposed as Istio names them, with every label."""
    s = Stats()
    s.inc("istio_tcp_connections_opened_total", 3, **ISTIO_LABELS)
    s.inc("istio_tcp_connections_closed_total", 2, **ISTIO_LABELS)
    s.inc("istio_tcp_received_bytes_total", 1234, **ISTIO_LABELS)
    s.inc("istio_tcp_sent_bytes_total", 98765, **ISTIO_LABELS)
    s.inc("istio_tcp_connections_opened_total", 1, **{**ISTIO_LABELS, "response_flags": "UF"})
    text = render(s)
    assert "# TYPE istio_tcp_connections_opened_total counter" in text
    fams = families(s)
    opened = fams["istio_tcp_connections_opened"]
    assert opened.type == "counter"
    by_flags = {x.labels["response_flags"]: x.value for x in opened.samples}
    assert by_flags == {"-": 3, "UF": 1}
    # Istio's whole standard label set: the registry's values, "unknown" for the rest
    full = {**dict.fromkeys(ISTIO_STANDARD_LABELS, "unknown"), **ISTIO_LABELS}
    assert opened.samples[0].labels == {**full, "response_flags": "-"}
    assert set(ISTIO_STANDARD_LABELS) >= {"destination_workload", "source_principal",
                                          "destination_canonical_service", "source_cluster"}
    assert fams["istio_tcp_sent_bytes"].samples[0].value == 98765
    assert fams["istio_tcp_received_bytes"].samples[0].value == 1234
    assert fams["istio_tcp_connections_closed"].samples[0].value == 2


def test_envoy_names_get_the_envoy_prefix_and_istio_tag_names():
    """Dotted names become envoy_*; listener/cluster labels get Istio's tag names."""
    s = Stats()
    s.inc("listener.no_filter_chain_match", listener="0.0.0.0_31400")
    s.inc("tls_inspector.sni_found", 5)
    s.declare("cluster.upstream_cx_connect_fail", cluster="outbound|2701||tcp-echo-service")
    s.gauge_add("cluster.upstream_cx_active", 4, cluster="outbound|2701||tcp-echo-service")
    s.gauge_add("cluster.upstream_cx_active", -1, cluster="outbound|2701||tcp-echo-service")
    fams = families(s)
    nfc = fams["envoy_listener_no_filter_chain_match"]
    assert nfc.type == "counter"
    assert [(x.labels, x.value) for x in nfc.samples] == [
        ({"listener_address": "0.0.0.0_31400"}, 1)]
    assert fams["envoy_tls_inspector_sni_found"].samples[0].value == 5
    fail = fams["envoy_cluster_upstream_cx_connect_fail"].samples[0]
    assert fail.value == 0 and fail.labels == {"cluster_name": "outbound|2701||tcp-echo-service"}
    active = fams["envoy_cluster_upstream_cx_active"]
    assert active.type == "gauge" and active.samples[0].value == 3
    # Envoy's counters carry no _total suffix on the wire
    assert "\nenvoy_tls_inspector_sni_found 5\n" in render(s)


def test_histogram_buckets_are_cumulative():
    """Connection durations: _bucket cumulative with +Inf, _sum and _count."""
    s = Stats()
    for v in (0.0005, 0.002, 0.3, 7.0, 7200.0):
        s.observe("istio_tcp_connection_duration_seconds", v, listener="0.0.0.0_31400")
    fam = families(s)["istio_tcp_connection_duration_seconds"]
    assert fam.type == "histogram"
    buckets = {x.labels["le"]: x.value for x in fam.samples if x.name.endswith("_bucket")}
    assert buckets["0.001"] == 1 and buckets["0.005"] == 2 and buckets["0.5"] == 3
    assert buckets["10.0"] == 4 and buckets["3600.0"] == 4 and buckets["+Inf"] == 5
    values = sorted(buckets.values())
    assert values == sorted(values)  # monotone
    total = {x.name: x.value for x in fam.samples if not x.name.endswith("_bucket")}
    assert total["istio_tcp_connection_duration_seconds_count"] == 5
    assert math.isclose(total["istio_tcp_connection_duration_seconds_sum"], 7207.3025)


def test_escaping_of_label_values_and_names():
    """Quotes, backslashes and newlines in label values survive a round trip."""
    s = Stats()
    nasty = 'a"b\\c\nd'
    s.inc("tcp.idle_timeout", stat_prefix=nasty)
    s.inc("weird-name.with spaces", **{"0bad-label": "x"})
    fams = families(s)
    assert fams["envoy_tcp_idle_timeout"].samples[0].labels == {"tcp_prefix": nasty}
    weird = fams["envoy_weird_name_with_spaces"].samples[0]
    assert weird.labels == {"_0bad_label": "x"}


def test_name_collisions_are_dropped_not_duplicated():
    """A counter and a gauge with one Prometheus name would make the scrape invalid."""
    s = Stats()
    s.inc("a.b", 1)
    s.gauge_set("a_b", 9)
    s.gauge_set("envoy_a_b", 2)
    s.inc("h_count", 1)
    s.observe("h", 1.0)
    text = render(s)
    fams = families(s)
    assert fams["envoy_a_b"].samples[0].value == 1 and text.count("# TYPE envoy_a_b ") == 1
    assert "h" not in fams and fams["h_count"].samples[0].value == 1


def test_empty_registry_is_an_empty_scrape():
    assert render(Stats()) == ""
    assert metric_name("listener.x") == "envoy_listener_x"


label_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(st.dictionaries(st.sampled_from(["cluster", "listener", "route", "x"]), label_values,
                       max_size=3),
       st.integers(min_value=0, max_value=2**53))
def test_any_label_value_round_trips(labels, value):
    """Whatever ends up in a label value, the scrape parses back to the same values."""
    s = Stats()
    s.inc("cluster.upstream_cx_connect_fail", value, **labels)
    sample = families(s)["envoy_cluster_upstream_cx_connect_fail"].samples[0]
    assert sample.value == value
    assert sorted(sample.labels.values()) == sorted(labels.values())
