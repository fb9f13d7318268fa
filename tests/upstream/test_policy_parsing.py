"""
The cluster policy in words and its parsers (tsgate/upstream/policy.py):
Istio's outlierDetection and loadBalancer as Envoy applies them at layer 4,
the ``tsgate.io/health-check`` and ``tsgate.io/connect-attempts``
annotations. Exact texts are asserted: ``describe`` is what ``explain``,
``/clusters`` and the status page show, the parse errors are what validation
prints. Each test names the mutants of ``mutmut`` it was written to kill.
"""

from __future__ import annotations

import pytest

from tsgate.config.model import TcpSettings, TrafficPolicy
from tsgate.upstream.policy import (
    CONNECT_ATTEMPTS,
    HEALTH_CHECK,
    ClusterPolicy,
    HealthCheck,
    Keepalive,
    OutlierSettings,
    build_policy,
    outlier_settings,
    parse_connect_attempts,
    parse_health_check,
)


def test_describe_every_part() -> None:
    """Kills ClusterPolicy.describe mutants (each line's text and condition) and _opt."""
    policy = ClusterPolicy(
        lb="RING_HASH", hash_source_ip=True, ring_size=2048,
        outlier=OutlierSettings(consecutive_gateway_errors=3, interval=2.5,
                                base_ejection_time=15, max_ejection_percent=50,
                                min_health_percent=20),
        health_check=HealthCheck(interval=5, timeout=0.5, unhealthy_threshold=3,
                                 healthy_threshold=2, send=b"PING"),
        keepalive=Keepalive(time=30, interval=None, probes=None),
        proxy_protocol="V2", connect_attempts=3, dns_round_robin=True)
    assert policy.describe() == [
        "lb RING_HASH by source ip (minimumRingSize 2048)",
        "outlier detection: eject after 3 consecutive connect failures, interval 2.5s, "
        "base ejection 15s, max ejected 50%, min healthy 20%",
        "health check: send/expect every 5s, timeout 0.5s, unhealthy after 3, healthy after 2",
        "tcp keepalive: time 30s, interval system, probes system",
        "PROXY protocol V2 to the upstream",
        "connect attempts 3",
        "DNS_ROUND_ROBIN: one resolved address at a time",
    ]


def test_describe_other_choices() -> None:
    """Kills describe mutants of the MAGLEV/LEAST_REQUEST/other branches and the defaults."""
    maglev = ClusterPolicy(lb="MAGLEV", maglev_size=251, ring_size=7,
                           outlier=OutlierSettings(consecutive_5xx_errors=0),
                           health_check=HealthCheck(expect=b"OK"),
                           keepalive=Keepalive(time=None, interval=1.5, probes=4))
    assert maglev.describe() == [
        "lb MAGLEV by source ip (tableSize 251)",
        "outlier detection: both error thresholds 0 (never ejects)",
        "health check: send/expect every 10s, timeout 1s, unhealthy after 2, healthy after 1",
        "tcp keepalive: time system, interval 1.5s, probes 4",
    ]
    assert ClusterPolicy().describe() == [
        "lb LEAST_REQUEST (fewest active connections; power of two choices when more than "
        "two endpoints)"]
    assert ClusterPolicy(lb="RANDOM", health_check=HealthCheck()).describe() == [
        "lb RANDOM",
        "health check: TCP connect every 10s, timeout 1s, unhealthy after 2, healthy after 1"]


def test_connect_attempts() -> None:
    """Kills parse_connect_attempts mutants (strip, the 1-100 bounds, the messages)."""
    assert parse_connect_attempts(" 3 ") == 3
    assert parse_connect_attempts("1") == 1 and parse_connect_attempts("100") == 100
    with pytest.raises(ValueError) as e:
        parse_connect_attempts("three")
    assert str(e.value) == "'three' is not a whole number of attempts (e.g. \"3\")"
    for bad in ("0", "101"):
        with pytest.raises(ValueError) as e:
            parse_connect_attempts(bad)
        assert str(e.value) == f"{bad} attempts is out of range 1-100"


def test_health_check_parsing() -> None:
    """Kills parse_health_check mutants (JSON, YAML flow, each key, encoding)."""
    assert parse_health_check("{}") == HealthCheck()
    assert parse_health_check(
        '{"interval": "5s", "timeout": "250ms", "unhealthyThreshold": 3, '
        '"healthyThreshold": 2, "send": "PING\\r\\n", "expect": "+PONG é"}') == HealthCheck(
        interval=5.0, timeout=0.25, unhealthy_threshold=3, healthy_threshold=2,
        send=b"PING\r\n", expect="+PONG é".encode())
    assert parse_health_check("{interval: 2s, unhealthyThreshold: 1}") == HealthCheck(
        interval=2.0, unhealthy_threshold=1)


@pytest.mark.parametrize(("text", "message"), [
    ("[1]", "must be a JSON mapping such as {\"interval\": \"5s\", \"timeout\": \"1s\"} "
            "({} for a TCP connect check)"),
    ("{a: [", "must be a JSON mapping such as {\"interval\": \"5s\", \"timeout\": \"1s\"} "
              "({} for a TCP connect check)"),
    ('{"zz": 1, "port": 2}', "unknown key 'port' (known: interval, timeout, "
                             "unhealthyThreshold, healthyThreshold, send, expect)"),
    ('{"interval": "0s"}', "interval '0s' is not a positive duration (e.g. 5s)"),
    ('{"timeout": "soon"}', "timeout 'soon' is not a positive duration (e.g. 5s)"),
    ('{"unhealthyThreshold": 0}', "unhealthyThreshold 0 must be a whole number >= 1"),
    ('{"healthyThreshold": true}', "healthyThreshold True must be a whole number >= 1"),
    ('{"healthyThreshold": 1.5}', "healthyThreshold 1.5 must be a whole number >= 1"),
    ('{"send": 1}', "send must be a string"),
    ('{"expect": null}', "expect must be a string"),
])
def test_health_check_errors(text: str, message: str) -> None:
    """Kills parse_health_check mutants of each refusal and its message."""
    with pytest.raises(ValueError) as e:
        parse_health_check(text)
    assert str(e.value) == message


def test_outlier_settings_as_envoy() -> None:
    """Kills outlier_settings mutants (aliases, split local-origin, durations, percents)."""
    assert outlier_settings(()) is None
    assert outlier_settings((("interval", "1s"),)) == OutlierSettings(interval=1.0)
    assert outlier_settings((("consecutiveErrors", 7),)) == OutlierSettings(
        consecutive_5xx_errors=7)
    assert outlier_settings((("consecutive5xxErrors", 0), ("consecutiveErrors", 7))) == \
        OutlierSettings(consecutive_5xx_errors=0)
    assert outlier_settings((("consecutiveGatewayErrors", 2), ("interval", 3),
                             ("baseEjectionTime", "1m"), ("maxEjectionPercent", 100),
                             ("minHealthPercent", 50))) == OutlierSettings(
        consecutive_gateway_errors=2, interval=3.0, base_ejection_time=60.0,
        max_ejection_percent=100, min_health_percent=50)
    split = outlier_settings((("splitExternalLocalOriginErrors", True),
                              ("consecutiveGatewayErrors", 2), ("consecutive5xxErrors", 9)))
    assert split == OutlierSettings(consecutive_5xx_errors=5, consecutive_gateway_errors=0)
    assert outlier_settings((("splitExternalLocalOriginErrors", True),
                             ("consecutiveLocalOriginFailures", 3))) == OutlierSettings(
        consecutive_5xx_errors=3, consecutive_gateway_errors=0)
    assert outlier_settings((("interval", "0s"), ("baseEjectionTime", None))) == \
        OutlierSettings()


def test_build_policy_load_balancers() -> None:
    """Kills build_policy mutants of the lb choice and the hash table sizes."""
    assert build_policy(None) == ClusterPolicy()
    assert build_policy(None, resolution="DNS_ROUND_ROBIN").dns_round_robin
    assert build_policy(TrafficPolicy(lb_simple="PASSTHROUGH")).lb == "ROUND_ROBIN"
    assert build_policy(TrafficPolicy(lb_simple="BOGUS")).lb == "LEAST_REQUEST"
    ring = build_policy(TrafficPolicy(use_source_ip=True, consistent_hash_settings=(
        ("ringHash", {"minimumRingSize": 64}),)))
    assert (ring.lb, ring.ring_size, ring.hash_source_ip) == ("RING_HASH", 64, True)
    old = build_policy(TrafficPolicy(use_source_ip=True,
                                     consistent_hash_settings=(("minimumRingSize", 99),)))
    assert (old.lb, old.ring_size) == ("RING_HASH", 99)
    huge = build_policy(TrafficPolicy(use_source_ip=True,
                                      consistent_hash_settings=(("minimumRingSize", 10**9),)))
    assert huge.ring_size == 8 * 1024 * 1024
    assert build_policy(TrafficPolicy(use_source_ip=True)).ring_size == 1024
    maglev = build_policy(TrafficPolicy(use_source_ip=True, consistent_hash_settings=(
        ("maglev", {"tableSize": 251}),)))
    assert (maglev.lb, maglev.maglev_size, maglev.ring_size) == ("MAGLEV", 251, 1024)
    assert build_policy(TrafficPolicy(use_source_ip=True, consistent_hash_settings=(
        ("maglev", {}),))).maglev_size == 65537


def test_build_policy_tcp_proxy_outlier_and_annotations() -> None:
    """Kills build_policy mutants of keepalive, PROXY protocol, outlier and the annotations."""
    tp = TrafficPolicy(tcp=TcpSettings(keepalive_time=30.0, keepalive_interval=5.0,
                                       keepalive_probes=3),
                       proxy_protocol="V1", outlier_detection=(("consecutive5xxErrors", 2),))
    policy = build_policy(tp, annotations=(
        (CONNECT_ATTEMPTS, "4"), (HEALTH_CHECK, '{"interval": "2s"}'), ("other", "x")))
    assert policy.keepalive == Keepalive(30.0, 5.0, 3)
    assert policy.proxy_protocol == "V1"
    assert policy.outlier == OutlierSettings(consecutive_5xx_errors=2)
    assert policy.connect_attempts == 4
    assert policy.health_check == HealthCheck(interval=2.0)
    for tcp in (TcpSettings(keepalive=True), TcpSettings(keepalive_interval=1.0),
                TcpSettings(keepalive_probes=2)):
        assert build_policy(TrafficPolicy(tcp=tcp)).keepalive is not None
    assert build_policy(TrafficPolicy(tcp=TcpSettings(max_connections=3))).keepalive is None
    assert build_policy(TrafficPolicy(proxy_protocol="V3")).proxy_protocol is None
    bad = build_policy(None, annotations=((CONNECT_ATTEMPTS, "0"), (HEALTH_CHECK, "[")))
    assert (bad.connect_attempts, bad.health_check) == (1, None)


def test_build_policy_reads_every_annotation() -> None:
    """Kills build_policy 133/136 (an unknown or refused annotation skips to the next one)."""
    policy = build_policy(None, annotations=(
        ("other", "x"), (CONNECT_ATTEMPTS, "zero"), (HEALTH_CHECK, "{}"),
        (CONNECT_ATTEMPTS, "2")))
    assert (policy.connect_attempts, policy.health_check) == (2, HealthCheck())


def test_build_policy_ring_size_edges() -> None:
    """Kills build_policy 57/76 (a ringHash that is not a mapping; the ring's floor of 1)."""
    odd = build_policy(TrafficPolicy(use_source_ip=True, consistent_hash_settings=(
        ("ringHash", "big"), ("minimumRingSize", 32))))
    assert (odd.lb, odd.ring_size) == ("RING_HASH", 32)
    one = build_policy(TrafficPolicy(use_source_ip=True,
                                     consistent_hash_settings=(("minimumRingSize", 1),)))
    assert one.ring_size == 1
    negative = build_policy(TrafficPolicy(use_source_ip=True,
                                          consistent_hash_settings=(("minimumRingSize", -4),)))
    assert negative.ring_size == 1
