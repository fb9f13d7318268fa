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
                          "names and partial wildcards are errors, as in Istio; the SNI names "
                          "of a terminating server"),
    ("Server", "tls"): (HONOURED, "see ServerTLSSettings"),
    ("Server", "defaultEndpoint"): (ACCEPTED, "sidecar ingress only; no effect at a gateway"),
    ("Server", "name"): (ACCEPTED, "a duplicate is warned about, as in Istio"),
    ("Port", "number"): (HONOURED, "the listener port (0 with a unix:// bind)"),
    ("Port", "protocol"): (HONOURED, "TCP, MONGO, REDIS, MYSQL: TCP routes; TLS, HTTPS with "
                           "PASSTHROUGH/AUTO_PASSTHROUGH: SNI routes; TLS (HTTPS with a tcp "
                           "route) with SIMPLE/MUTUAL/OPTIONAL_MUTUAL: terminated, plaintext "
                           "to the tcp route; HTTP family and UDP: warned, server skipped"),
    ("Port", "name"): (HONOURED, "required and unique per Gateway, as in Istio; shown in "
                       "tsgate routes"),
    ("Port", "targetPort"): (ERROR, "Istio: targetPort has no impact on Gateways"),
    ("ServerTLSSettings", "httpsRedirect"): (ACCEPTED, "HTTP only; warned on other protocols "
                                             "as in Istio"),
    ("ServerTLSSettings", "mode"): (HONOURED, "PASSTHROUGH, AUTO_PASSTHROUGH: SNI routing; "
                                    "SIMPLE, MUTUAL (client certificate required), "
                                    "OPTIONAL_MUTUAL (verified if sent): terminated by tsgate; "
                                    "ISTIO_MUTUAL: warned, the server is skipped (no mesh "
                                    "certificates)"),
    ("ServerTLSSettings", "serverCertificate"): (HONOURED, "PEM chain served when terminating "
                                                 "(file checked against privateKey, rotated "
                                                 "on change); warned as ignored with "
                                                 "PASSTHROUGH"),
    ("ServerTLSSettings", "privateKey"): (HONOURED, "as serverCertificate (unencrypted PEM)"),
    ("ServerTLSSettings", "caCertificates"): (HONOURED, "client CA for MUTUAL/OPTIONAL_MUTUAL "
                                              "(required there); warned as ignored with "
                                              "PASSTHROUGH"),
    ("ServerTLSSettings", "caCrl"): (HONOURED, "CRL checked for the client leaf "
                                     "(MUTUAL/OPTIONAL_MUTUAL); with SIMPLE or beside "
                                     "credentialName an error, as in Istio"),
    ("ServerTLSSettings", "credentialName"): (HONOURED, "read from --credentials DIR/NAME "
                                              "(tls.crt/tls.key/ca.crt/ca.crl or "
                                              "cert/key/cacert/crl; NAME-cacert), rotated"),
    ("ServerTLSSettings", "credentialNames"): (HONOURED, "both credentials (RSA and ECDSA) in "
                                               "one context"),
    ("ServerTLSSettings", "caCertCredentialName"): (HONOURED, "the client CA from that "
                                                    "credential's ca.crt (error without one)"),
    ("ServerTLSSettings", "tlsCertificates"): (HONOURED, "each pair loaded into one context; "
                                               "more than 2 warned, as in Istio"),
    ("ServerTLSSettings", "subjectAltNames"): (HONOURED, "client certificate SAN must equal "
                                               "one (MUTUAL/OPTIONAL_MUTUAL); warned as "
                                               "ignored with SIMPLE"),
    ("ServerTLSSettings", "verifyCertificateSpki"): (HONOURED, "base64 SHA-256 SPKI pins of "
                                                     "the client certificate; as "
                                                     "subjectAltNames"),
    ("ServerTLSSettings", "verifyCertificateHash"): (HONOURED, "hex SHA-256 certificate pins; "
                                                     "as subjectAltNames (either pin list "
                                                     "matching is enough, as Envoy)"),
    ("ServerTLSSettings", "minProtocolVersion"): (HONOURED, "validated; minimum TLS version "
                                                  "when terminating (default TLSV1_2)"),
    ("ServerTLSSettings", "maxProtocolVersion"): (HONOURED, "validated; maximum TLS version "
                                                  "when terminating (default TLSV1_3)"),
    ("ServerTLSSettings", "cipherSuites"): (HONOURED, "OpenSSL cipher list for TLS <= 1.2; "
                                            "unknown or duplicate names warned and ignored"),
    ("ServerTLSSettings", "insecureSkipVerify"): (WARNED, "not applied on a gateway server, "
                                                  "warned"),
    ("TLSCertificate", "serverCertificate"): (HONOURED, "as ServerTLSSettings.serverCertificate"),
    ("TLSCertificate", "privateKey"): (HONOURED, "as ServerTLSSettings.privateKey"),
    ("TLSCertificate", "caCertificates"): (WARNED, "not applied (the server's caCertificates "
                                           "or credential is the client CA), warned"),
    # ----------------------------------------------------- VirtualService
    ("VirtualService", "hosts"): (HONOURED, "binding to server hosts; none = a delegate (http "
                                  "only, accepted, not served)"),
    ("VirtualService", "gateways"): (HONOURED, "name, ns/name or legacy FQDN; 'mesh' alone: "
                                     "ignored with a notice; a missing Gateway is IST0101"),
    ("VirtualService", "http"): (ACCEPTED, "HTTP routes are not served at layer 4 (HTTP servers "
                                 "are warned about); subsets still checked (IST0101)"),
    ("VirtualService", "tls"): (HONOURED, "SNI chains on PASSTHROUGH servers; warned as ignored "
                                "on TCP servers; not used (unwarned) on servers tsgate "
                                "terminates, whose tcp route is used"),
    ("VirtualService", "tcp"): (HONOURED, "the TCP route of TCP servers and of TLS servers "
                                "tsgate terminates (first matching rule); warned as ignored on "
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
    ("ServiceEntry", "subjectAltNames"): (WARNED, "not applied (DestinationRule "
                                          "tls.subjectAltNames is): warned"),
    ("ServicePort", "number"): (HONOURED, "the service port of the cluster"),
    ("ServicePort", "protocol"): (HONOURED, "validated; unset is TCP at layer 4 (Istio sniffs)"),
    ("ServicePort", "name"): (HONOURED, "endpoint ports map by it"),
    ("ServicePort", "targetPort"): (HONOURED, "the endpoint port unless the endpoint names one"),
    ("WorkloadEntry", "address"): (HONOURED, "IP or DNS name; unix:// endpoints are warned and "
                                   "skipped; none (with a network) warned and skipped"),
    ("WorkloadEntry", "ports"): (HONOURED, "endpoint port per service port name"),
    ("WorkloadEntry", "labels"): (HONOURED, "subset and workloadSelector matching"),
    ("WorkloadEntry", "network"): (WARNED, "not applied: tsgate connects to every endpoint "
                                   "directly (warned, here and in ServiceEntry endpoints)"),
    ("WorkloadEntry", "locality"): (WARNED, "not applied: all endpoints balanced as one "
                                    "locality (warned)"),
    ("WorkloadEntry", "weight"): (HONOURED, "endpoint weight for LEAST_REQUEST, ROUND_ROBIN "
                                  "(smooth weighted), RANDOM, ring hash and maglev (unset: 1)"),
    ("WorkloadEntry", "serviceAccount"): (WARNED, "not applied: tsgate does not originate "
                                          "Istio mTLS (ISTIO_MUTUAL) (warned)"),
    ("WorkloadSelector", "labels"): (HONOURED, "ServiceEntry.workloadSelector"),
    ("WorkloadSelector", "matchLabels"): (HONOURED, "DestinationRule.workloadSelector and "
                                          "AuthorizationPolicy.selector: applied when a "
                                          "subset of --gateway-label"),
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
    ("TrafficPolicy", "outlierDetection"): (HONOURED, "see OutlierDetection: connect "
                                            "failures eject endpoints"),
    ("TrafficPolicy", "tls"): (HONOURED, "see ClientTLSSettings: TLS origination; "
                               "IST0128/IST0129 without caCertificates"),
    ("TrafficPolicy", "portLevelSettings"): (HONOURED, "replace the policy for that port"),
    ("TrafficPolicy", "tunnel"): (WARNED, "not supported: warned, ignored"),
    ("TrafficPolicy", "proxyProtocol"): (HONOURED, "see ProxyProtocol: a PROXY header sent to "
                                         "the upstream"),
    ("TrafficPolicy", "retryBudget"): (WARNED, "HTTP only: warned as not applied"),
    ("PortTrafficPolicy", "port"): (HONOURED, "the service port it applies to"),
    ("PortTrafficPolicy", "loadBalancer"): (HONOURED, "as TrafficPolicy"),
    ("PortTrafficPolicy", "connectionPool"): (HONOURED, "as TrafficPolicy (idleTimeout and "
                                              "maxConnectionDuration here: warned, not "
                                              "applied, as Istio)"),
    ("PortTrafficPolicy", "outlierDetection"): (HONOURED, "as TrafficPolicy"),
    ("PortTrafficPolicy", "tls"): (HONOURED, "as TrafficPolicy"),
    ("LoadBalancerSettings", "simple"): (HONOURED, "LEAST_REQUEST (default; LEAST_CONN, "
                                         "UNSPECIFIED), ROUND_ROBIN, RANDOM; PASSTHROUGH: "
                                         "warned, round robin"),
    ("LoadBalancerSettings", "consistentHash"): (HONOURED, "useSourceIp: ring hash or maglev "
                                                 "on the client IP; HTTP keys warned, "
                                                 "ignored; see ConsistentHashLB"),
    ("LoadBalancerSettings", "localityLbSetting"): (WARNED, "not applied: no localities "
                                                    "(warned)"),
    ("LoadBalancerSettings", "warmupDurationSecs"): (WARNED, "slow start not applied "
                                                     "(warned)"),
    ("LoadBalancerSettings", "warmup"): (WARNED, "bounds checked as Istio; slow start is not "
                                         "implemented: warned"),
    ("LoadBalancerSettings", "zoneAwareLbSetting"): (WARNED, "not applied (no zones), warned"),
    ("ConsistentHashLB", "httpHeaderName"): (WARNED, "HTTP data: warned, ignored"),
    ("ConsistentHashLB", "httpCookie"): (WARNED, "HTTP data: warned, ignored"),
    ("ConsistentHashLB", "useSourceIp"): (HONOURED, "hash key: the client IP (the PROXY "
                                          "header's source when accepted)"),
    ("ConsistentHashLB", "httpQueryParameterName"): (WARNED, "HTTP data: warned, ignored"),
    ("ConsistentHashLB", "ringHash"): (HONOURED, "ring hash (the default with useSourceIp); "
                                       "see RingHash"),
    ("ConsistentHashLB", "maglev"): (HONOURED, "maglev table; see MagLev"),
    ("ConsistentHashLB", "minimumRingSize"): (HONOURED, "deprecated in Istio; ring size when "
                                              "ringHash gives none"),
    ("RingHash", "minimumRingSize"): (HONOURED, "ring size (default 1024, capped at 8M), "
                                      "points per endpoint by weight"),
    ("MagLev", "tableSize"): (HONOURED, "checked as Istio (prime, < 5000011); default 65537"),
    ("WarmupConfiguration", "duration"): (WARNED, "required, >= 1ms (Istio); see warmup"),
    ("WarmupConfiguration", "minimumPercent"): (WARNED, "<= 100 (Istio); see warmup"),
    ("WarmupConfiguration", "aggression"): (WARNED, "> 0 (Istio); see warmup"),
    ("ConnectionPoolSettings", "tcp"): (HONOURED, "see TCPSettings"),
    ("ConnectionPoolSettings", "http"): (WARNED, "HTTP only: warned as not applied"),
    ("TCPSettings", "maxConnections"): (HONOURED, "active connections per cluster; over it the "
                                        "connection is closed (UO)"),
    ("TCPSettings", "connectTimeout"): (HONOURED, "upstream connect timeout (default 10s)"),
    ("TCPSettings", "tcpKeepalive"): (HONOURED, "SO_KEEPALIVE on each upstream socket ({}: "
                                      "system settings)"),
    ("TCPSettings", "maxConnectionDuration"): (HONOURED, "closes the connection after it (DT); "
                                               "from the rule's top-level policy only, "
                                               "elsewhere warned"),
    ("TCPSettings", "idleTimeout"): (HONOURED, "default 1h, 0s disables (top-level policy of "
                                     "the first destination, as istiod; elsewhere warned)"),
    ("TcpKeepalive", "probes"): (HONOURED, "TCP_KEEPCNT (unset: system)"),
    ("TcpKeepalive", "time"): (HONOURED, "TCP_KEEPIDLE (unset: system)"),
    ("TcpKeepalive", "interval"): (HONOURED, "TCP_KEEPINTVL (unset: system)"),
    ("OutlierDetection", "splitExternalLocalOriginErrors"): (HONOURED, "connect failures count "
                                                             "against "
                                                             "consecutiveLocalOriginFailures "
                                                             "instead"),
    ("OutlierDetection", "consecutiveLocalOriginFailures"): (HONOURED, "threshold with "
                                                             "splitExternalLocalOriginErrors "
                                                             "(default 5)"),
    ("OutlierDetection", "consecutiveGatewayErrors"): (HONOURED, "a connect failure or timeout "
                                                       "is one; the lower non-zero threshold "
                                                       "ejects"),
    ("OutlierDetection", "consecutive5xxErrors"): (HONOURED, "as consecutiveGatewayErrors "
                                                   "(default 5)"),
    ("OutlierDetection", "interval"): (HONOURED, "ejections end on its ticks; the multiplier "
                                       "decays per interval"),
    ("OutlierDetection", "baseEjectionTime"): (HONOURED, "x times ejected, capped at "
                                               "max(300s, base), as Envoy"),
    ("OutlierDetection", "maxEjectionPercent"): (HONOURED, "0-100 checked; caps ejections "
                                                 "(one always allowed, as Envoy)"),
    ("OutlierDetection", "minHealthPercent"): (HONOURED, "0-100 checked; below it all "
                                               "endpoints are used"),
    ("OutlierDetection", "consecutiveErrors"): (HONOURED, "deprecated alias of "
                                                "consecutive5xxErrors"),
    ("ClientTLSSettings", "mode"): (HONOURED, "DISABLE; SIMPLE and MUTUAL: tsgate originates "
                                    "TLS (failure: UF); ISTIO_MUTUAL: warned, not originated"),
    ("ClientTLSSettings", "clientCertificate"): (HONOURED, "sent with MUTUAL (warned as unused "
                                                 "with SIMPLE)"),
    ("ClientTLSSettings", "privateKey"): (HONOURED, "as clientCertificate"),
    ("ClientTLSSettings", "caCertificates"): (HONOURED, "verifies the upstream (system roots "
                                              "when omitted: IST0128)"),
    ("ClientTLSSettings", "credentialName"): (HONOURED, "client certificate/key/CA from "
                                              "--credentials DIR/NAME, rotated"),
    ("ClientTLSSettings", "subjectAltNames"): (HONOURED, "the upstream must prove one of them "
                                               "(else sni, else the host)"),
    ("ClientTLSSettings", "sni"): (HONOURED, "sent only when set (as Istio for TCP)"),
    ("ClientTLSSettings", "insecureSkipVerify"): (HONOURED, "the upstream is not verified "
                                                  "(warned beside caCertificates or "
                                                  "subjectAltNames)"),
    ("ClientTLSSettings", "caCrl"): (WARNED, "not applied on originated TLS (no revocation "
                                     "check), warned"),
    ("TunnelSettings", "protocol"): (WARNED, "see TrafficPolicy.tunnel"),
    ("TunnelSettings", "targetHost"): (WARNED, "see TrafficPolicy.tunnel"),
    ("TunnelSettings", "targetPort"): (WARNED, "see TrafficPolicy.tunnel"),
    ("ProxyProtocol", "version"): (HONOURED, "V1 or V2 header sent before any upstream "
                                   "bytes (before the ClientHello when originating TLS)"),
    # ------------------------------------------------ AuthorizationPolicy
    ("AuthorizationPolicy", "selector"): (HONOURED, "applies when matchLabels are a subset of "
                                          "--gateway-label (policies of the root or the "
                                          "gateway's namespace); not with targetRef(s): error"),
    ("AuthorizationPolicy", "targetRef"): (HONOURED, "as targetRefs"),
    ("AuthorizationPolicy", "targetRefs"): (HONOURED, "a gateway.networking.k8s.io Gateway of "
                                            "the listener, in the policy's namespace; other "
                                            "kinds warned (the policy does not apply)"),
    ("AuthorizationPolicy", "rules"): (HONOURED, "absent or empty matches nothing (ALLOW: "
                                       "warned, denies all); [{}] matches all"),
    ("AuthorizationPolicy", "action"): (HONOURED, "DENY, then ALLOW, at accept before any "
                                        "upstream connect; AUDIT never changes the decision; "
                                        "CUSTOM: warned, not enforced (policy ignored)"),
    ("AuthorizationPolicy", "provider"): (WARNED, "see ExtensionProvider"),
    ("ExtensionProvider", "name"): (WARNED, "required for CUSTOM (error otherwise, as Istio); "
                                    "tsgate calls no external authorizer: warned"),
    ("PolicyTargetReference", "group"): (HONOURED, "must be gateway.networking.k8s.io for "
                                         "kind Gateway (error, as Istio)"),
    ("PolicyTargetReference", "kind"): (HONOURED, "required; only Gateway selects tsgate "
                                        "(others warned)"),
    ("PolicyTargetReference", "name"): (HONOURED, "required; the Gateway's name"),
    ("PolicyTargetReference", "namespace"): (HONOURED, "must be the policy's own namespace "
                                             "(error otherwise, as Istio)"),
    ("Rule", "from"): (HONOURED, "any one source matches (present but empty: error)"),
    ("Rule", "to"): (HONOURED, "any one operation matches (present but empty: error)"),
    ("Rule", "when"): (HONOURED, "every condition must match"),
    ("Rule.From", "source"): (HONOURED, "fields ANDed, values ORed (empty: error)"),
    ("Rule.To", "operation"): (HONOURED, "fields ANDed, values ORed (empty: error)"),
    ("Source", "ipBlocks"): (HONOURED, "IPs/CIDRs of the socket peer (bad CIDR: error)"),
    ("Source", "notIpBlocks"): (HONOURED, "as ipBlocks, negated"),
    ("Source", "remoteIpBlocks"): (HONOURED, "the client a PROXY header declares "
                                   "(tsgate.io/proxy-protocol), else the peer"),
    ("Source", "notRemoteIpBlocks"): (HONOURED, "as remoteIpBlocks, negated"),
    ("Source", "principals"): (HONOURED, "the SPIFFE URI SAN of the client certificate "
                               "verified by a MUTUAL/OPTIONAL_MUTUAL server, decided after the "
                               "handshake and before the upstream connect; on a listener "
                               "without such a server there is no identity (warned)"),
    ("Source", "notPrincipals"): (HONOURED, "as principals"),
    ("Source", "namespaces"): (HONOURED, "the ns segment of that SPIFFE identity; as principals"),
    ("Source", "notNamespaces"): (HONOURED, "as namespaces"),
    ("Source", "serviceAccounts"): (HONOURED, "the ns/sa segments of that identity; as "
                                    "principals"),
    ("Source", "notServiceAccounts"): (HONOURED, "as serviceAccounts"),
    ("Source", "requestPrincipals"): (WARNED, "HTTP only: an ALLOW rule with it is dropped, "
                                      "in DENY/AUDIT the field is ignored (as Istio's TCP "
                                      "filter); warned"),
    ("Source", "notRequestPrincipals"): (WARNED, "as requestPrincipals"),
    ("Operation", "ports"): (HONOURED, "the listener port, settled at config time (bad port: "
                             "error)"),
    ("Operation", "notPorts"): (HONOURED, "as ports, negated"),
    ("Operation", "hosts"): (WARNED, "as Source.requestPrincipals (HTTP only)"),
    ("Operation", "notHosts"): (WARNED, "as Source.requestPrincipals (HTTP only)"),
    ("Operation", "methods"): (WARNED, "as Source.requestPrincipals (HTTP only)"),
    ("Operation", "notMethods"): (WARNED, "as Source.requestPrincipals (HTTP only)"),
    ("Operation", "paths"): (WARNED, "as Source.requestPrincipals (HTTP only)"),
    ("Operation", "notPaths"): (WARNED, "as Source.requestPrincipals (HTTP only)"),
    ("Condition", "key"): (HONOURED, "source.ip, remote.ip, destination.ip, destination.port, "
                           "connection.sni evaluated; source.principal/namespace/serviceAccount "
                           "as Source.principals; HTTP keys as Source.requestPrincipals; "
                           "unknown: error"),
    ("Condition", "values"): (HONOURED, "any one matches (strings: exact, prefix*, *suffix, "
                              "*; IP keys: IPs/CIDRs)"),
    ("Condition", "notValues"): (HONOURED, "none may match; values or notValues required"),
}

KIND_ORDER = ("Gateway", "VirtualService", "WorkloadEntry", "ServiceEntry", "DestinationRule",
              "AuthorizationPolicy")


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
