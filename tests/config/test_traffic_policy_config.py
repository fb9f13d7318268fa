"""DestinationRule traffic policy as compiled: the policy in force, annotations, warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsgate.config import load_config

BASE = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - route:
    - destination: {host: svc.example, port: {number: 80}SUBSET}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [svc.example]
  ports: [{number: 80, name: tcp, protocol: TCP}]
  resolution: RESOLUTION
  endpoints:
  - {address: ADDRESS, labels: {v: one}}
---
"""


def load(tmp_path: Path, dr: str, subset: str = "", resolution: str = "STATIC",
         address: str = "10.0.0.1") -> Any:
    text = (BASE.replace("SUBSET", f", subset: {subset}" if subset else "")
            .replace("RESOLUTION", resolution).replace("ADDRESS", address)) + dr
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config([str(path)])


def cluster(result: Any) -> Any:
    assert result.ok, [str(e) for e in result.errors]
    return result.table.listeners[0].tcp_route.destinations[0].cluster


def test_default_is_istios_least_request(tmp_path: Path) -> None:
    c = cluster(load(tmp_path, ""))
    assert c.lb_policy == "LEAST_REQUEST"
    assert c.policy.lb == "LEAST_REQUEST" and c.policy.connect_attempts == 1


def test_every_policy_field_reaches_the_cluster(tmp_path: Path) -> None:
    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: dr
  annotations:
    tsgate.io/connect-attempts: "3"
    tsgate.io/health-check: '{"interval": "2s", "timeout": "500ms", "send": "PING",
      "expect": "PONG"}'
spec:
  host: svc.example
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1009}}}
    connectionPool:
      tcp: {maxConnections: 5, tcpKeepalive: {time: 30s, interval: 5s, probes: 3}}
    outlierDetection: {consecutiveGatewayErrors: 2, consecutive5xxErrors: 0, interval: 5s,
                       baseEjectionTime: 1m, maxEjectionPercent: 50, minHealthPercent: 20}
    proxyProtocol: {version: V2}
"""
    result = load(tmp_path, dr)
    assert not result.warnings, [str(w) for w in result.warnings]
    c = cluster(result)
    p = c.policy
    assert (c.lb_policy, p.hash_source_ip, p.maglev_size) == ("MAGLEV", True, 1009)
    assert c.max_connections == 5
    assert (p.keepalive.time, p.keepalive.interval, p.keepalive.probes) == (30, 5, 3)
    o = p.outlier
    assert (o.threshold, o.interval, o.base_ejection_time, o.max_ejection_percent,
            o.min_health_percent) == (2, 5, 60, 50, 20)
    assert p.proxy_protocol == "V2" and p.connect_attempts == 3
    h = p.health_check
    assert (h.interval, h.timeout, h.send, h.expect) == (2, 0.5, b"PING", b"PONG")


def test_ring_hash_sizes_and_empty_keepalive(tmp_path: Path) -> None:
    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: svc.example
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 2048}}}
    connectionPool: {tcp: {tcpKeepalive: {}}}
"""
    p = cluster(load(tmp_path, dr)).policy
    assert (p.lb, p.ring_size) == ("RING_HASH", 2048)
    assert p.keepalive is not None and p.keepalive.time is None  # on, with system settings


def test_subset_policy_overrides_the_rule(tmp_path: Path) -> None:
    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: svc.example
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    proxyProtocol: {version: V1}
    outlierDetection: {consecutive5xxErrors: 3}
  subsets:
  - name: one
    labels: {v: one}
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true}}
      outlierDetection: {consecutive5xxErrors: 1}
"""
    base = cluster(load(tmp_path, dr))
    assert (base.lb_policy, base.policy.proxy_protocol, base.policy.outlier.threshold) == (
        "ROUND_ROBIN", "V1", 3)
    sub = cluster(load(tmp_path, dr, subset="one"))
    assert sub.lb_policy == "RING_HASH"  # the subset's own
    assert sub.policy.outlier.threshold == 1
    assert sub.policy.proxy_protocol == "V1"  # not overridden: the rule's


def test_dns_round_robin_is_one_address_at_a_time(tmp_path: Path) -> None:
    c = cluster(load(tmp_path, "", resolution="DNS_ROUND_ROBIN", address="db.example"))
    assert c.policy.dns_round_robin and c.resolution == "DNS"


def test_bad_annotations_are_errors_naming_them(tmp_path: Path) -> None:
    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: dr
  annotations: {tsgate.io/connect-attempts: "0", tsgate.io/health-check: "{nope"}
spec:
  host: svc.example
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
"""
    result = load(tmp_path, dr)
    errors = "\n".join(str(e) for e in result.errors)
    assert 'metadata.annotations["tsgate.io/connect-attempts"]' in errors
    assert "out of range 1-100" in errors
    assert 'metadata.annotations["tsgate.io/health-check"]' in errors


def test_annotation_on_the_wrong_kind_is_a_warning(tmp_path: Path) -> None:
    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: dr
  annotations: {tsgate.io/proxy-protocol: required}
spec:
  host: svc.example
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
"""
    result = load(tmp_path, dr)
    assert result.ok
    assert any("takes effect on Gateways only" in str(w) for w in result.warnings)


def test_fields_not_applied_are_warned(tmp_path: Path) -> None:
    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: svc.example
  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH, localityLbSetting: {enabled: true}, warmup: {duration: 1s}}
    connectionPool: {http: {http1MaxPendingRequests: 1}}
    retryBudget: {percent: 5}
  subsets:
  - name: one
    labels: {v: one}
    trafficPolicy: {connectionPool: {tcp: {idleTimeout: 5s}}}
"""
    result = load(tmp_path, dr)
    assert result.ok
    text = "\n".join(str(w) for w in result.warnings)
    for path in ("loadBalancer.localityLbSetting", "loadBalancer.warmup",
                 "connectionPool.http", "retryBudget", "loadBalancer.simple",
                 "spec.subsets[0].trafficPolicy.connectionPool.tcp.idleTimeout"):
        assert f"spec.{path}" in text or path in text, (path, text)


def test_proxy_protocol_gateway_annotations_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE.replace("SUBSET", "").replace("RESOLUTION", "STATIC")
                    .replace("ADDRESS", "10.0.0.1")
                    .replace("metadata: {name: gw}",
                             "metadata:\n  name: gw\n  annotations:\n"
                             "    tsgate.io/proxy-protocol: sometimes\n"
                             "    tsgate.io/proxy-protocol-trusted-cidrs: 10.0.0.0/8,nope"))
    result = load_config([str(path)])
    errors = "\n".join(str(e) for e in result.errors)
    assert 'must be "required" or "optional"' in errors
    assert "'nope' is not an address or CIDR" in errors


def test_explain_prints_the_policy_in_force(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import tsgate

    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: dr
  annotations: {tsgate.io/connect-attempts: "2"}
spec:
  host: svc.example
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    proxyProtocol: {version: V1}
"""
    load(tmp_path, dr)
    env = {**os.environ, "PYTHONPATH": str(Path(tsgate.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-m", "tsgate", "explain", str(tmp_path / "c.yaml"), "--port", "31400"],
        capture_output=True, text=True, env=env, check=True).stdout
    assert "lb LEAST_REQUEST" in out
    assert "outlier detection: eject after 1 consecutive connect failures" in out
    assert "PROXY protocol V1 to the upstream" in out
    assert "connect attempts 2" in out
