"""
What tsgate does with every field of the Istio kinds it reads.

One entry per field of each message in :mod:`tsgate.config.schema` (messages
as Istio's reference names them: ``Server``, ``TCPSettings``...). Status:

- ``honoured``: tsgate acts on it as Istio does (at layer 4);
- ``warned``: valid Istio; tsgate does not (fully) serve it and says so in a
  warning that names the field and what it does instead (``tsgate validate
  --strict`` makes that an error);
- ``error``: Istio rejects it (or rejects it in that place), so does tsgate;
- ``accepted``: valid, checked as Istio checks it, and without effect at a
  layer-4 gateway (HTTP-only, sidecar-only or bookkeeping); no warning.

``docs/istio-support.md`` is generated from this table (``python3 -m
tsgate.config.support``) and a test keeps both in sync with the schema.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from tsgate.config.schema import SPECS, ListOf, MapOf, Obj, Spec

HONOURED, WARNED, ERROR, ACCEPTED = "honoured", "warned", "error", "accepted"
STATUSES = (HONOURED, WARNED, ERROR, ACCEPTED)

#: (message, field) -> (status, what tsgate does)
SUPPORT: dict[tuple[str, str], tuple[str, str]] = {
    # ------------------------------------------------------------ Gateway
    ("Gateway", "selector"): (HONOURED, "Gateways whose selector is a subset of "
                              "--gateway-label are served; others are skipped with a notice"),
    ("Gateway", "servers"): (HONOURED, "merged per (bind, port) in file order, as istiod"),
    ("Server", "port"): (HONOURED, "one listener per (bind, port.number)"),
    ("Server", "bind"): (HONOURED, "an IP address, unix:///path or unix://@abstract (port 0)"),
    ("Server", "hosts"): (HONOURED, "which VirtualServices bind (ns/ prefixes honoured); short "
                          "names and partial wildcards are errors, as in Istio"),
    ("Server", "tls"): (HONOURED, "see ServerTLSSettings"),
    ("Server", "defaultEndpoint"): (ACCEPTED, "sidecar ingress only; no effect at a gateway"),
    ("Server", "name"): (ACCEPTED, "a duplicate is warned about, as in Istio"),
    ("Port", "number"): (HONOURED, "the listener port (0 with a unix:// bind)"),
    ("Port", "protocol"): (HONOURED, "TCP, MONGO, REDIS, MYSQL: TCP routes; TLS, HTTPS with "
                           "PASSTHROUGH/AUTO_PASSTHROUGH: SNI routes; HTTP family and UDP: "
                           "warned, server skipped"),
    ("Port", "name"): (HONOURED, "required and unique per Gateway, as in Istio; shown in "
                       "tsgate routes"),
    ("Port", "targetPort"): (ERROR, "Istio: targetPort has no impact on Gateways"),
    ("ServerTLSSettings", "httpsRedirect"): (ACCEPTED, "HTTP only; warned on other protocols "
                                             "as in Istio"),
    ("ServerTLSSettings", "mode"): (WARNED, "PASSTHROUGH and AUTO_PASSTHROUGH honoured; SIMPLE, "
                                    "MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL: warned, the server "
                                    "is skipped (TLS termination: issue #10)"),
    ("ServerTLSSettings", "serverCertificate"): (WARNED, "used with terminating modes only "
                                                 "(skipped); ignored with a warning for "
                                                 "PASSTHROUGH"),
    ("ServerTLSSettings", "privateKey"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "caCertificates"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "caCrl"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "credentialName"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "credentialNames"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "caCertCredentialName"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "tlsCertificates"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "subjectAltNames"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "verifyCertificateSpki"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "verifyCertificateHash"): (WARNED, "as serverCertificate"),
    ("ServerTLSSettings", "minProtocolVersion"): (ACCEPTED, "validated; terminating modes only"),
    ("ServerTLSSettings", "maxProtocolVersion"): (ACCEPTED, "validated; terminating modes only"),
    ("ServerTLSSettings", "cipherSuites"): (ACCEPTED, "terminating modes only"),
    ("ServerTLSSettings", "insecureSkipVerify"): (ACCEPTED, "terminating modes only"),
    ("TLSCertificate", "serverCertificate"): (WARNED, "as ServerTLSSettings.serverCertificate"),
    ("TLSCertificate", "privateKey"): (WARNED, "as ServerTLSSettings.serverCertificate"),
    ("TLSCertificate", "caCertificates"): (WARNED, "as ServerTLSSettings.serverCertificate"),
    # ----------------------------------------------------- VirtualService
    ("VirtualService", "hosts"): (HONOURED, "binding to server hosts; none = a delegate (http "
                                  "only, accepted, not served)"),
    ("VirtualService", "gateways"): (HONOURED, "name, ns/name or legacy FQDN; 'mesh' alone: "
                                     "ignored with a notice; a missing Gateway is IST0101"),
    ("VirtualService", "http"): (ACCEPTED, "HTTP routes are not served at layer 4 (HTTP servers "
                                 "are warned about); subsets still checked (IST0101)"),
    ("VirtualService", "tls"): (HONOURED, "SNI chains on PASSTHROUGH servers; warned as ignored "
                                "on TCP servers"),
    ("VirtualService", "tcp"): (HONOURED, "the TCP route of TCP servers; warned as ignored on "
                                "PASSTHROUGH servers (istio#40511)"),
    ("VirtualService", "exportTo"): (HONOURED, "visibility from the gateway's namespace"),
    ("TLSRoute", "match"): (HONOURED, "one SNI chain per match; duplicate SNIs warned, first "
                            "wins"),
    ("TLSRoute", "route"): (HONOURED, "weighted destinations"),
    ("TCPRoute", "match"): (HONOURED, "first matching rule of the first bound VirtualService"),
    ("TCPRoute", "route"): (HONOURED, "weighted destinations"),
    ("TLSMatchAttributes", "sniHosts"): (HONOURED, "exact and *. names, outbound_ names; "
                                         "partial wildcards warned and skipped (Envoy "
                                         "refuses them)"),
    ("TLSMatchAttributes", "port"): (HONOURED, "compared with the server port; a port no "
                                     "server has is warned"),
    ("TLSMatchAttributes", "gateways"): (HONOURED, "overrides the VirtualService's gateways"),
    ("TLSMatchAttributes", "destinationSubnets"): (WARNED, "not evaluated at gateways (as "
                                                   "Istio): the match ignores it"),
    ("TLSMatchAttributes", "sourceLabels"): (WARNED, "as destinationSubnets"),
    ("TLSMatchAttributes", "sourceNamespace"): (WARNED, "as destinationSubnets"),
    ("L4MatchAttributes", "port"): (HONOURED, "compared with the server port; a port no "
                                    "server has is warned"),
    ("L4MatchAttributes", "gateways"): (HONOURED, "overrides the VirtualService's gateways"),
    ("L4MatchAttributes", "destinationSubnets"): (WARNED, "not evaluated at gateways (as "
                                                  "Istio): the match ignores it"),
    ("L4MatchAttributes", "sourceLabels"): (WARNED, "as destinationSubnets"),
    ("L4MatchAttributes", "sourceNamespace"): (WARNED, "as destinationSubnets"),
    ("L4MatchAttributes", "sourceSubnet"): (WARNED, "as destinationSubnets"),
    ("RouteDestination", "destination"): (HONOURED, "a cluster outbound|port|subset|fqdn"),
    ("RouteDestination", "weight"): (HONOURED, "relative weight, random pick per connection"),
    ("Destination", "host"): (HONOURED, "short names in the VirtualService's namespace; a "
                              "ServiceEntry host or resolved by DNS as written; an IP is an "
                              "error, as in Istio"),
    ("Destination", "subset"): (HONOURED, "DestinationRule subset labels filter endpoints; "
                                "a subset no DestinationRule defines is IST0101 (warning): "
                                "a bound route is served to a missing cluster, its "
                                "connections closed at once (NC), as Envoy does"),
    ("Destination", "port"): (HONOURED, "see PortSelector"),
    ("PortSelector", "number"): (HONOURED, "the service port; default: the only port of the "
                                 "ServiceEntry, else the listener port; a port the "
                                 "ServiceEntry lacks is IST0101 (warning; IST0112 when none "
                                 "is given): served to a missing cluster, closed with NC"),
    # ------------------------------------------------------- ServiceEntry
    ("ServiceEntry", "hosts"): (HONOURED, "the registry; partial wildcards warned (Istio too)"),
    ("ServiceEntry", "addresses"): (ACCEPTED, "VIPs for sidecars; a gateway routes by "
                                    "destination (IST0134 noticed, not warned)"),
    ("ServiceEntry", "ports"): (HONOURED, "see ServicePort"),
    ("ServiceEntry", "location"): (HONOURED, "AUTO_PASSTHROUGH serves MESH_INTERNAL hosts only"),
    ("ServiceEntry", "resolution"): (HONOURED, "STATIC, DNS, DNS_ROUND_ROBIN; NONE and "
                                     "DYNAMIC_DNS as a route destination: error (nothing to "
                                     "connect to at a gateway)"),
    ("ServiceEntry", "endpoints"): (HONOURED, "see WorkloadEntry"),
    ("ServiceEntry", "workloadSelector"): (HONOURED, "selects WorkloadEntries of its namespace"),
    ("ServiceEntry", "exportTo"): (HONOURED, "visibility from the gateway's namespace"),
    ("ServiceEntry", "subjectAltNames"): (ACCEPTED, "mTLS identity check of sidecars"),
    ("ServicePort", "number"): (HONOURED, "the service port of the cluster"),
    ("ServicePort", "protocol"): (HONOURED, "validated; unset is TCP at layer 4 (Istio sniffs)"),
    ("ServicePort", "name"): (HONOURED, "endpoint ports map by it"),
    ("ServicePort", "targetPort"): (HONOURED, "the endpoint port unless the endpoint names one"),
    ("WorkloadEntry", "address"): (HONOURED, "IP or DNS name; unix:// endpoints are warned and "
                                   "skipped; none (with a network) warned and skipped"),
    ("WorkloadEntry", "ports"): (HONOURED, "endpoint port per service port name"),
    ("WorkloadEntry", "labels"): (HONOURED, "subset and workloadSelector matching"),
    ("WorkloadEntry", "network"): (ACCEPTED, "multi-network routing is istiod's; tsgate "
                                   "connects directly"),
    ("WorkloadEntry", "locality"): (ACCEPTED, "no locality load balancing"),
    ("WorkloadEntry", "weight"): (ACCEPTED, "kept in the table; endpoints are picked round "
                                  "robin"),
    ("WorkloadEntry", "serviceAccount"): (ACCEPTED, "mTLS identity of sidecars"),
    ("WorkloadSelector", "labels"): (HONOURED, "ServiceEntry.workloadSelector"),
    ("WorkloadSelector", "matchLabels"): (HONOURED, "DestinationRule.workloadSelector: applied "
                                          "when it selects --gateway-label"),
    # ---------------------------------------------------- DestinationRule
    ("DestinationRule", "host"): (HONOURED, "exact host first, then the longest wildcard"),
    ("DestinationRule", "trafficPolicy"): (HONOURED, "see TrafficPolicy"),
    ("DestinationRule", "subsets"): (HONOURED, "see Subset"),
    ("DestinationRule", "exportTo"): (HONOURED, "visibility from the gateway's namespace"),
    ("DestinationRule", "workloadSelector"): (HONOURED, "see WorkloadSelector.matchLabels"),
    ("Subset", "name"): (HONOURED, "Destination.subset and AUTO_PASSTHROUGH SNI names"),
    ("Subset", "labels"): (HONOURED, "filters the endpoints"),
    ("Subset", "trafficPolicy"): (HONOURED, "overrides the rule's policy field by field"),
    ("TrafficPolicy", "loadBalancer"): (HONOURED, "see LoadBalancerSettings"),
    ("TrafficPolicy", "connectionPool"): (HONOURED, "see ConnectionPoolSettings; empty is an "
                                          "error, as in Istio"),
    ("TrafficPolicy", "outlierDetection"): (ACCEPTED, "validated; ejection is issue #11"),
    ("TrafficPolicy", "tls"): (WARNED, "tsgate does not originate TLS: warned, ignored; "
                               "IST0128/IST0129 without caCertificates"),
    ("TrafficPolicy", "portLevelSettings"): (HONOURED, "replace the policy for that port"),
    ("TrafficPolicy", "tunnel"): (WARNED, "not supported: warned, ignored"),
    ("TrafficPolicy", "proxyProtocol"): (ACCEPTED, "validated; sending PROXY upstream is "
                                         "issue #11"),
    ("TrafficPolicy", "retryBudget"): (ACCEPTED, "HTTP only"),
    ("PortTrafficPolicy", "port"): (HONOURED, "the service port it applies to"),
    ("PortTrafficPolicy", "loadBalancer"): (HONOURED, "as TrafficPolicy"),
    ("PortTrafficPolicy", "connectionPool"): (HONOURED, "as TrafficPolicy"),
    ("PortTrafficPolicy", "outlierDetection"): (ACCEPTED, "as TrafficPolicy"),
    ("PortTrafficPolicy", "tls"): (WARNED, "as TrafficPolicy"),
    ("LoadBalancerSettings", "simple"): (ACCEPTED, "validated and kept on the cluster; "
                                         "endpoints are picked round robin (policies: #11)"),
    ("LoadBalancerSettings", "consistentHash"): (WARNED, "HTTP keys warned (only useSourceIp "
                                                 "applies at L4); see ConsistentHashLB"),
    ("LoadBalancerSettings", "localityLbSetting"): (ACCEPTED, "no locality load balancing"),
    ("LoadBalancerSettings", "warmupDurationSecs"): (ACCEPTED, "validated; no slow start"),
    ("LoadBalancerSettings", "warmup"): (WARNED, "bounds checked as Istio; slow start is not "
                                         "implemented: warned"),
    ("LoadBalancerSettings", "zoneAwareLbSetting"): (ACCEPTED, "no zone-aware balancing"),
    ("ConsistentHashLB", "httpHeaderName"): (WARNED, "HTTP data: warned, ignored"),
    ("ConsistentHashLB", "httpCookie"): (WARNED, "HTTP data: warned, ignored"),
    ("ConsistentHashLB", "useSourceIp"): (ACCEPTED, "kept on the policy; hashing is issue #11"),
    ("ConsistentHashLB", "httpQueryParameterName"): (WARNED, "HTTP data: warned, ignored"),
    ("ConsistentHashLB", "ringHash"): (ACCEPTED, "see RingHash"),
    ("ConsistentHashLB", "maglev"): (ACCEPTED, "tableSize checked as Istio (prime, < 5000011)"),
    ("ConsistentHashLB", "minimumRingSize"): (ACCEPTED, "deprecated in Istio"),
    ("RingHash", "minimumRingSize"): (ACCEPTED, "no ring hash"),
    ("MagLev", "tableSize"): (ACCEPTED, "validated as Istio; no maglev"),
    ("WarmupConfiguration", "duration"): (WARNED, "required, >= 1ms (Istio); see warmup"),
    ("WarmupConfiguration", "minimumPercent"): (WARNED, "<= 100 (Istio); see warmup"),
    ("WarmupConfiguration", "aggression"): (WARNED, "> 0 (Istio); see warmup"),
    ("ConnectionPoolSettings", "tcp"): (HONOURED, "see TCPSettings"),
    ("ConnectionPoolSettings", "http"): (ACCEPTED, "HTTP only"),
    ("TCPSettings", "maxConnections"): (HONOURED, "active connections per cluster; over it the "
                                        "connection is closed (UO)"),
    ("TCPSettings", "connectTimeout"): (HONOURED, "upstream connect timeout (default 10s)"),
    ("TCPSettings", "tcpKeepalive"): (ACCEPTED, "validated; upstream SO_KEEPALIVE is issue #11"),
    ("TCPSettings", "maxConnectionDuration"): (HONOURED, "closes the connection after it (DT)"),
    ("TCPSettings", "idleTimeout"): (HONOURED, "default 1h, 0s disables (top-level policy of "
                                     "the first destination, as istiod)"),
    ("TcpKeepalive", "probes"): (ACCEPTED, "see tcpKeepalive"),
    ("TcpKeepalive", "time"): (ACCEPTED, "see tcpKeepalive"),
    ("TcpKeepalive", "interval"): (ACCEPTED, "see tcpKeepalive"),
    ("OutlierDetection", "splitExternalLocalOriginErrors"): (ACCEPTED, "see outlierDetection"),
    ("OutlierDetection", "consecutiveLocalOriginFailures"): (ACCEPTED, "see outlierDetection"),
    ("OutlierDetection", "consecutiveGatewayErrors"): (ACCEPTED, "see outlierDetection"),
    ("OutlierDetection", "consecutive5xxErrors"): (ACCEPTED, "see outlierDetection"),
    ("OutlierDetection", "interval"): (ACCEPTED, "see outlierDetection"),
    ("OutlierDetection", "baseEjectionTime"): (ACCEPTED, "see outlierDetection"),
    ("OutlierDetection", "maxEjectionPercent"): (ACCEPTED, "0-100 checked"),
    ("OutlierDetection", "minHealthPercent"): (ACCEPTED, "0-100 checked"),
    ("OutlierDetection", "consecutiveErrors"): (ACCEPTED, "deprecated in Istio"),
    ("ClientTLSSettings", "mode"): (WARNED, "DISABLE honoured; others warned, ignored"),
    ("ClientTLSSettings", "clientCertificate"): (WARNED, "see mode"),
    ("ClientTLSSettings", "privateKey"): (WARNED, "see mode"),
    ("ClientTLSSettings", "caCertificates"): (WARNED, "see mode; its absence is IST0128"),
    ("ClientTLSSettings", "credentialName"): (WARNED, "see mode"),
    ("ClientTLSSettings", "subjectAltNames"): (WARNED, "see mode"),
    ("ClientTLSSettings", "sni"): (WARNED, "see mode"),
    ("ClientTLSSettings", "insecureSkipVerify"): (WARNED, "see mode"),
    ("ClientTLSSettings", "caCrl"): (WARNED, "see mode"),
    ("TunnelSettings", "protocol"): (WARNED, "see TrafficPolicy.tunnel"),
    ("TunnelSettings", "targetHost"): (WARNED, "see TrafficPolicy.tunnel"),
    ("TunnelSettings", "targetPort"): (WARNED, "see TrafficPolicy.tunnel"),
    ("ProxyProtocol", "version"): (ACCEPTED, "V1 or V2 checked; see proxyProtocol"),
}

KIND_ORDER = ("Gateway", "VirtualService", "WorkloadEntry", "ServiceEntry", "DestinationRule")


def schema_fields() -> Iterator[tuple[str, str, str]]:
    """(kind, message, field) for every field of the schema, kinds in order, once each."""
    seen: set[tuple[str, str]] = set()

    def walk(kind: str, spec: Spec) -> Iterator[tuple[str, str, str]]:
        if isinstance(spec, ListOf):
            yield from walk(kind, spec.item)
        elif isinstance(spec, MapOf):
            yield from walk(kind, spec.value)
        elif isinstance(spec, Obj):
            for name in spec.fields:
                if (spec.name, name) not in seen:
                    seen.add((spec.name, name))
                    yield kind, spec.name, name
            for sub in spec.fields.values():
                yield from walk(kind, sub)

    for kind in (*KIND_ORDER, *(k for k in SPECS if k not in KIND_ORDER)):
        yield from walk(kind, SPECS[kind])


def markdown_table() -> str:
    """The generated part of docs/istio-support.md."""
    lines = []
    kind = ""
    for k, message, field in schema_fields():
        if k != kind:
            kind = k
            lines += ["", f"### {kind}", "", "| message | field | status | what tsgate does |",
                      "|---|---|---|---|"]
        status, note = SUPPORT[(message, field)]
        lines.append(f"| {message} | `{field}` | {status} | {note} |")
    return "\n".join(lines[1:]) + "\n"


BEGIN = "<!-- generated by python3 -m tsgate.config.support: do not edit below -->"
END = "<!-- end of generated table -->"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(markdown_table())
