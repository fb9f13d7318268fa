"""
The upstream policy of one cluster, settled at config time: which load
balancer, consistent-hash parameters, outlier detection, health check,
TCP keepalive, PROXY protocol towards the upstream, connect attempts and
DNS behaviour.

Built by the compiler from a DestinationRule's (merged) ``trafficPolicy`` and
its ``tsgate.io/`` annotations; read by :mod:`tsgate.upstream.balancer` and the
upstream connect stage. Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

import attrs
import yaml

#: Istio's consistentHash ringHash.minimumRingSize default, and Envoy's maximum.
DEFAULT_RING_SIZE = 1024
MAX_RING_SIZE = 8 * 1024 * 1024
#: Envoy's maglev table_size default (a prime).
DEFAULT_MAGLEV_SIZE = 65537

CONNECT_ATTEMPTS = "tsgate.io/connect-attempts"
HEALTH_CHECK = "tsgate.io/health-check"

#: loadBalancer.simple -> the algorithm used (LEAST_CONN is Istio's old alias,
#: UNSPECIFIED is Istio's default, LEAST_REQUEST). PASSTHROUGH has no meaning
#: at an ingress gateway (no original destination): round robin, warned.
LB_ALGORITHMS = {
    None: "LEAST_REQUEST",
    "UNSPECIFIED": "LEAST_REQUEST",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "ROUND_ROBIN": "ROUND_ROBIN",
    "RANDOM": "RANDOM",
    "PASSTHROUGH": "ROUND_ROBIN",
}


@attrs.frozen
class OutlierSettings:
    """Istio's outlierDetection, with Istio's/Envoy's defaults when the block is present."""

    consecutive_gateway_errors: int = 0
    consecutive_5xx_errors: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0

    @property
    def threshold(self) -> int:
        """
        Consecutive connect failures that eject a host (0: never). At layer 4
        a connect failure or timeout is both a gateway error and a 5xx, so the
        lower non-zero threshold wins.
        """
        limits = [n for n in (self.consecutive_gateway_errors, self.consecutive_5xx_errors) if n]
        return min(limits) if limits else 0


@attrs.frozen
class Keepalive:
    """connectionPool.tcp.tcpKeepalive; None fields keep the system default."""

    time: Optional[float] = None
    interval: Optional[float] = None
    probes: Optional[int] = None


@attrs.frozen
class HealthCheck:
    """The ``tsgate.io/health-check`` annotation: a TCP connect, or send and expect."""

    interval: float = 10.0
    timeout: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1
    send: bytes = b""
    expect: bytes = b""


@attrs.frozen
class ClusterPolicy:
    """Everything about a cluster's upstream side that is not an endpoint."""

    #: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV
    lb: str = "LEAST_REQUEST"
    #: consistentHash.useSourceIp: the hash key is the client address
    hash_source_ip: bool = False
    ring_size: int = DEFAULT_RING_SIZE
    maglev_size: int = DEFAULT_MAGLEV_SIZE
    keepalive: Optional[Keepalive] = None
    #: "V1" or "V2": send a PROXY header to the upstream
    proxy_protocol: Optional[str] = None
    outlier: Optional[OutlierSettings] = None
    connect_attempts: int = 1
    health_check: Optional[HealthCheck] = None
    #: ServiceEntry resolution DNS_ROUND_ROBIN: one resolved address at a time
    dns_round_robin: bool = False

    def describe(self) -> list[str]:
        """The policy in force, in words, for ``explain``, ``/clusters`` and the status page."""
        out = []
        if self.lb in ("RING_HASH", "MAGLEV"):
            size = self.ring_size if self.lb == "RING_HASH" else self.maglev_size
            what = "minimumRingSize" if self.lb == "RING_HASH" else "tableSize"
            out.append(f"lb {self.lb} by source ip ({what} {size})")
        elif self.lb == "LEAST_REQUEST":
            out.append("lb LEAST_REQUEST (fewest active connections; power of two choices "
                       "when more than two endpoints)")
        else:
            out.append(f"lb {self.lb}")
        if self.outlier is not None:
            o = self.outlier
            if o.threshold:
                out.append(f"outlier detection: eject after {o.threshold} consecutive connect "
                           f"failures, interval {o.interval:g}s, base ejection "
                           f"{o.base_ejection_time:g}s, max ejected "
                           f"{o.max_ejection_percent}%, min healthy {o.min_health_percent}%")
            else:
                out.append("outlier detection: both error thresholds 0 (never ejects)")
        if self.health_check is not None:
            h = self.health_check
            kind = "send/expect" if h.send or h.expect else "TCP connect"
            out.append(f"health check: {kind} every {h.interval:g}s, timeout {h.timeout:g}s, "
                       f"unhealthy after {h.unhealthy_threshold}, healthy after "
                       f"{h.healthy_threshold}")
        if self.keepalive is not None:
            k = self.keepalive
            out.append("tcp keepalive: time " + _opt(k.time) + ", interval " + _opt(k.interval)
                       + ", probes " + (str(k.probes) if k.probes is not None else "system"))
        if self.proxy_protocol:
            out.append(f"PROXY protocol {self.proxy_protocol} to the upstream")
        if self.connect_attempts != 1:
            out.append(f"connect attempts {self.connect_attempts}")
        if self.dns_round_robin:
            out.append("DNS_ROUND_ROBIN: one resolved address at a time")
        return out


def parse_duration(text: str) -> Optional[float]:
    """Istio duration text to seconds (imported late: tsgate.config imports this module)."""
    from tsgate.config.schema import parse_duration as parse

    return parse(text)


def _opt(value: Optional[float]) -> str:
    return f"{value:g}s" if value is not None else "system"


# ----------------------------------------------------------------- annotations


def parse_connect_attempts(value: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number of attempts (e.g. \"3\")") from None
    if not 1 <= n <= 100:
        raise ValueError(f"{n} attempts is out of range 1-100")
    return n


_HC_KEYS = ("interval", "timeout", "unhealthyThreshold", "healthyThreshold", "send", "expect")


def parse_health_check(value: str) -> HealthCheck:
    """
    ``tsgate.io/health-check``: a JSON (or YAML flow) mapping, e.g.
    ``{"interval": "5s", "timeout": "1s", "unhealthyThreshold": 2,
    "healthyThreshold": 1, "send": "PING\\r\\n", "expect": "+PONG"}``;
    ``{}`` is a TCP connect check with the defaults.
    """
    try:
        data = json.loads(value)
    except ValueError:
        try:
            data = yaml.safe_load(value)
        except yaml.YAMLError:
            data = None
    if not isinstance(data, Mapping):
        raise ValueError("must be a JSON mapping such as {\"interval\": \"5s\", "
                         "\"timeout\": \"1s\"} ({} for a TCP connect check)")
    unknown = sorted(set(map(str, data)) - set(_HC_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(_HC_KEYS)})")
    kwargs: dict[str, Any] = {}
    for key, attr in (("interval", "interval"), ("timeout", "timeout")):
        if key in data:
            seconds = parse_duration(str(data[key]))
            if seconds is None or seconds <= 0:
                raise ValueError(f"{key} {data[key]!r} is not a positive duration (e.g. 5s)")
            kwargs[attr] = seconds
    for key, attr in (("unhealthyThreshold", "unhealthy_threshold"),
                      ("healthyThreshold", "healthy_threshold")):
        if key in data:
            n = data[key]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(f"{key} {n!r} must be a whole number >= 1")
            kwargs[attr] = n
    for key in ("send", "expect"):
        if key in data:
            if not isinstance(data[key], str):
                raise ValueError(f"{key} must be a string")
            kwargs[key] = data[key].encode("utf-8")
    return HealthCheck(**kwargs)


#: DestinationRule annotations tsgate reads, with their parsers.
DESTINATION_RULE_KNOBS = {
    CONNECT_ATTEMPTS: parse_connect_attempts,
    HEALTH_CHECK: parse_health_check,
}


# ---------------------------------------------------------------- from Istio


def _duration(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return parse_duration(str(value))


def outlier_settings(items: tuple[tuple[str, Any], ...]) -> Optional[OutlierSettings]:
    """outlierDetection as written (key, value pairs) -> settings; () -> None."""
    if not items:
        return None
    od = dict(items)
    five = od.get("consecutive5xxErrors")
    if five is None:
        five = od.get("consecutiveErrors")  # deprecated alias
    if od.get("splitExternalLocalOriginErrors"):
        # Connect failures are local-origin errors; split out, they count
        # against consecutiveLocalOriginFailures (Envoy's default 5) instead.
        local = od.get("consecutiveLocalOriginFailures")
        five = 5 if local is None else local
        od["consecutiveGatewayErrors"] = 0
    kwargs: dict[str, Any] = {}
    if five is not None:
        kwargs["consecutive_5xx_errors"] = int(five)
    if od.get("consecutiveGatewayErrors") is not None:
        kwargs["consecutive_gateway_errors"] = int(od["consecutiveGatewayErrors"])
    for key, attr in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
        seconds = _duration(od.get(key))
        if seconds:
            kwargs[attr] = seconds
    for key, attr in (("maxEjectionPercent", "max_ejection_percent"),
                      ("minHealthPercent", "min_health_percent")):
        if od.get(key) is not None:
            kwargs[attr] = int(od[key])
    return OutlierSettings(**kwargs)


def build_policy(traffic_policy: Any, annotations: tuple[tuple[str, str], ...] = (),
                 resolution: str = "") -> ClusterPolicy:
    """
    The ClusterPolicy of a (merged, port-level resolved) ``TrafficPolicy``
    (``tsgate.config.model.TrafficPolicy`` or None), the DestinationRule's
    annotations and the ServiceEntry's resolution.
    """
    kwargs: dict[str, Any] = {"dns_round_robin": resolution == "DNS_ROUND_ROBIN"}
    tp = traffic_policy
    if tp is not None:
        hashing = dict(getattr(tp, "consistent_hash_settings", ()) or ())
        if tp.use_source_ip:
            kwargs["hash_source_ip"] = True
            maglev = hashing.get("maglev")
            ring = hashing.get("ringHash")
            if isinstance(maglev, Mapping):
                kwargs["lb"] = "MAGLEV"
                if maglev.get("tableSize"):
                    kwargs["maglev_size"] = int(maglev["tableSize"])
            else:
                kwargs["lb"] = "RING_HASH"
                size = (ring or {}).get("minimumRingSize") if isinstance(ring, Mapping) else None
                size = size or hashing.get("minimumRingSize")
                if size:
                    kwargs["ring_size"] = max(1, min(int(size), MAX_RING_SIZE))
        else:
            kwargs["lb"] = LB_ALGORITHMS.get(tp.lb_simple, "LEAST_REQUEST")
        tcp = tp.tcp
        if tcp is not None and (tcp.keepalive_time is not None or tcp.keepalive_interval
                                is not None or tcp.keepalive_probes is not None
                                or getattr(tcp, "keepalive", False)):
            kwargs["keepalive"] = Keepalive(tcp.keepalive_time, tcp.keepalive_interval,
                                            tcp.keepalive_probes)
        if tp.proxy_protocol in ("V1", "V2"):
            kwargs["proxy_protocol"] = tp.proxy_protocol
        kwargs["outlier"] = outlier_settings(tp.outlier_detection)
    for key, value in annotations:
        parser = DESTINATION_RULE_KNOBS.get(key)
        if parser is None:
            continue
        try:
            parsed = parser(value)
        except ValueError:
            continue  # refused by validation already
        if key == CONNECT_ATTEMPTS:
            kwargs["connect_attempts"] = parsed
        else:
            kwargs["health_check"] = parsed
    return ClusterPolicy(**kwargs)
