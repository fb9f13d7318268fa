"""
Every DestinationRule / ServiceEntry / WorkloadEntry (and Gateway TLS) field
tsgate reads but does not apply gets a warning that says so (Istio-valid YAML is never
refused, and never silently half-applied).

Found from the document's field paths (``Meta.positions``), so fields the
model does not keep are seen too. What *is* applied lives in
:mod:`tsgate.upstream.policy` and the compiler.
"""

from __future__ import annotations

import re
from typing import Any

_TP = r"spec\.(?:trafficPolicy|subsets\[\d+\]\.trafficPolicy)(?:\.portLevelSettings\[\d+\])?"

#: (field path regex, message); the first match per path wins
DESTINATION_RULE: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern + r"$"), message) for pattern, message in (
        (_TP + r"\.loadBalancer\.localityLbSetting",
         "locality load balancing is not applied: tsgate has no localities (all endpoints "
         "are balanced as one locality)"),
        (_TP + r"\.loadBalancer\.zoneAwareLbSetting",
         "zone-aware load balancing is not applied: tsgate has no zones (all endpoints are "
         "balanced as one zone)"),
        (_TP + r"\.tls\.caCrl",
         "caCrl is not applied on originated TLS: the upstream's certificate is verified "
         "against caCertificates, without a revocation list"),
        (_TP + r"\.loadBalancer\.(?:warmup|warmupDurationSecs)",
         "slow-start warmup is not applied: new endpoints get their full share at once"),
        (_TP + r"\.loadBalancer\.simple",
         None),  # checked by value below (PASSTHROUGH)
        (_TP + r"\.connectionPool\.http",
         "connectionPool.http is HTTP-only; not applied at layer 4"),
        (_TP + r"\.retryBudget", "retryBudget is HTTP-only; not applied at layer 4"),
        (r"spec\.subsets\[\d+\]\.trafficPolicy\.connectionPool\.tcp\."
         r"(?:idleTimeout|maxConnectionDuration)",
         "not applied: as in Istio, idleTimeout and maxConnectionDuration come from the "
         "rule's top-level trafficPolicy only"),
        (r"spec\.(?:trafficPolicy|subsets\[\d+\]\.trafficPolicy)\.portLevelSettings\[\d+\]"
         r"\.connectionPool\.tcp\.(?:idleTimeout|maxConnectionDuration)",
         "not applied: as in Istio, idleTimeout and maxConnectionDuration come from the "
         "rule's top-level trafficPolicy only"),
    ) if message is not None
)

_WORKLOAD = (
    (r"\.locality", "locality is not applied: tsgate balances all endpoints as one locality"),
    (r"\.network", "network is not applied: tsgate connects to every endpoint directly"),
    (r"\.serviceAccount",
     "serviceAccount is not applied: tsgate does not originate Istio mTLS (ISTIO_MUTUAL)"),
)

SERVICE_ENTRY: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"spec\.subjectAltNames$"),
     "subjectAltNames is not applied: originated TLS is verified by the DestinationRule's "
     "tls.sni / tls.subjectAltNames (ISTIO_MUTUAL, which would use these, is not served)"),
    *((re.compile(r"spec\.endpoints\[\d+\]" + p + "$"), m) for p, m in _WORKLOAD),
)

WORKLOAD_ENTRY: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(r"spec" + p + "$"), m) for p, m in _WORKLOAD
)

GATEWAY: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"spec\.servers\[\d+\]\.tls\.insecureSkipVerify$"),
     "insecureSkipVerify is not applied on a gateway server: client certificates are "
     "verified as the tls.mode says"),
    (re.compile(r"spec\.servers\[\d+\]\.tls\.tlsCertificates\[\d+\]\.caCertificates$"),
     "tlsCertificates[].caCertificates is not applied: the client CA comes from the server's "
     "caCertificates or credential"),
)

_TABLES = {
    "Gateway": GATEWAY,
    "DestinationRule": DESTINATION_RULE,
    "ServiceEntry": SERVICE_ENTRY,
    "WorkloadEntry": WORKLOAD_ENTRY,
}


def unapplied(resource: Any) -> list[tuple[str, str]]:
    """(field path, warning) for each field of ``resource`` that tsgate does not apply."""
    meta = resource.meta
    table = _TABLES.get(meta.kind)
    if not table:
        return []
    out = []
    for path in sorted(meta.positions, key=lambda p: (meta.positions[p], p)):
        for pattern, message in table:
            if pattern.match(path):
                out.append((path, message))
                break
    if meta.kind == "DestinationRule":
        out.extend(_passthrough(resource))
    return out


def _passthrough(dr: Any) -> list[tuple[str, str]]:
    message = ("loadBalancer PASSTHROUGH forwards to the original destination, which an "
               "ingress gateway does not have: round robin is used")
    out = []
    policies = [("spec.trafficPolicy", dr.traffic_policy)]
    policies += [(f"spec.subsets[{i}].trafficPolicy", s.traffic_policy)
                 for i, s in enumerate(dr.subsets)]
    for path, tp in policies:
        if tp is None:
            continue
        if tp.lb_simple == "PASSTHROUGH":
            out.append((f"{path}.loadBalancer.simple", message))
        for j, (_, level) in enumerate(tp.port_level):
            if level.lb_simple == "PASSTHROUGH":
                out.append((f"{path}.portLevelSettings[{j}].loadBalancer.simple", message))
    return out
