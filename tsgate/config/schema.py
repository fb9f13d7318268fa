"""
The field schemas of Istio's networking kinds, for rejecting unknown fields.

Istio's CRDs reject fields they do not know (``kubectl apply`` fails), and a
misspelt ``snihosts`` silently doing nothing is the worst outcome for a
gateway, so tsgate rejects them too and suggests the near name. The schemas
list every field of the Istio API for these messages (also the HTTP and
certificate fields tsgate does not act on), so valid Istio YAML is accepted;
what tsgate acts on is modelled in ``tsgate.config.model``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any, Callable, Optional

from tsgate.config.diagnostics import ERROR, Diagnostic
from tsgate.config.loader import join_path

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> Optional[float]:
    """Go/protobuf duration text (``10s``, ``1.5s``, ``1h30m``, ``500ms``) to seconds."""
    text = text.strip()
    if text in ("0", "+0"):
        return 0.0
    if not text:
        return None
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    return total


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class Spec:
    what = "a value"

    def accepts(self, value: Any) -> bool:
        return True

    def check(self, value: Any, path: str, report: Callable[[str, str], None]) -> None:
        if not self.accepts(value):
            report(path, f"expected {self.what}, got {describe(value)}")


class Anything(Spec):
    """Opaque: accepted as is (HTTP routes, Kubernetes bookkeeping)."""


class Str(Spec):
    what = "a string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)


class Int(Spec):
    what = "an integer"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)


class Num(Spec):
    what = "a number"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)


class Bool(Spec):
    what = "a boolean"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


class Duration(Spec):
    what = "a duration string such as \"10s\" or \"500ms\""

    def check(self, value: Any, path: str, report: Callable[[str, str], None]) -> None:
        if not isinstance(value, str):
            report(path, f"expected {self.what}, got {describe(value)}")
        elif parse_duration(value) is None:
            report(path, f"invalid duration {value!r} (use a number and unit: ms, s, m, h)")


class ListOf(Spec):
    what = "a list"

    def __init__(self, item: Spec) -> None:
        self.item = item

    def check(self, value: Any, path: str, report: Callable[[str, str], None]) -> None:
        if not isinstance(value, list):
            report(path, f"expected a list, got {describe(value)}")
            return
        for i, item in enumerate(value):
            sub = join_path(path, i)
            if item is None:
                report(sub, "expected a value, got null")
            else:
                self.item.check(item, sub, report)


class MapOf(Spec):
    """A map with free string keys (labels, WorkloadEntry ports)."""

    what = "a mapping"

    def __init__(self, value: Spec) -> None:
        self.value = value

    def check(self, value: Any, path: str, report: Callable[[str, str], None]) -> None:
        if not isinstance(value, dict):
            report(path, f"expected a mapping, got {describe(value)}")
            return
        for key, item in value.items():
            sub = join_path(path, key)
            if not isinstance(key, str):
                report(sub, f"expected a string key, got {describe(key)}")
            elif item is not None:
                self.value.check(item, sub, report)


class Obj(Spec):
    """A message with known field names; unknown ones are errors."""

    what = "a mapping"

    def __init__(self, name: str, fields: Mapping[str, Spec]) -> None:
        self.name = name
        self.fields = dict(fields)

    def check(self, value: Any, path: str, report: Callable[[str, str], None]) -> None:
        if not isinstance(value, dict):
            report(path, f"expected a mapping ({self.name}), got {describe(value)}")
            return
        for key, item in value.items():
            sub = join_path(path, key)
            spec = self.fields.get(key) if isinstance(key, str) else None
            if spec is None:
                hint = suggest(str(key), self.fields)
                report(sub, f"unknown field {str(key)!r} in {self.name}{hint}")
            elif item is not None:
                spec.check(item, sub, report)


def suggest(name: str, known: Mapping[str, Any]) -> str:
    """`` (did you mean "sniHosts"?)`` when a known name is near ``name``."""
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return f' (did you mean "{lowered[name.lower()]}"?)'
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if not close:
        close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=1,
                                                                cutoff=0.6)]
    return f' (did you mean "{close[0]}"?)' if close else ""


# ------------------------------------------------------------------ schemas

LABELS = MapOf(Str())
PORT_SELECTOR = Obj("PortSelector", {"number": Int()})

METADATA = Obj("ObjectMeta", {
    "name": Str(), "generateName": Str(), "namespace": Str(), "labels": LABELS,
    "annotations": LABELS, "uid": Str(), "resourceVersion": Str(), "generation": Int(),
    "creationTimestamp": Anything(), "deletionTimestamp": Anything(),
    "deletionGracePeriodSeconds": Int(), "ownerReferences": Anything(),
    "finalizers": ListOf(Str()), "managedFields": Anything(), "selfLink": Str(),
})

SERVER_TLS = Obj("ServerTLSSettings", {
    "httpsRedirect": Bool(), "mode": Str(), "serverCertificate": Str(), "privateKey": Str(),
    "caCertificates": Str(), "caCrl": Str(), "credentialName": Str(),
    "credentialNames": ListOf(Str()), "caCertCredentialName": Str(),
    "tlsCertificates": ListOf(Obj("TLSCertificate", {
        "serverCertificate": Str(), "privateKey": Str(), "caCertificates": Str()})),
    "subjectAltNames": ListOf(Str()), "verifyCertificateSpki": ListOf(Str()),
    "verifyCertificateHash": ListOf(Str()), "minProtocolVersion": Str(),
    "maxProtocolVersion": Str(), "cipherSuites": ListOf(Str()), "insecureSkipVerify": Bool(),
})

GATEWAY = Obj("Gateway", {
    "selector": LABELS,
    "servers": ListOf(Obj("Server", {
        "port": Obj("Port", {"number": Int(), "protocol": Str(), "name": Str(),
                             "targetPort": Int()}),
        "bind": Str(), "hosts": ListOf(Str()), "tls": SERVER_TLS,
        "defaultEndpoint": Str(), "name": Str(),
    })),
})

DESTINATION = Obj("Destination", {"host": Str(), "subset": Str(), "port": PORT_SELECTOR})
ROUTE_DESTINATION = Obj("RouteDestination", {"destination": DESTINATION, "weight": Int()})
_L4_MATCH_FIELDS: dict[str, Spec] = {
    "destinationSubnets": ListOf(Str()), "port": Int(), "sourceLabels": LABELS,
    "gateways": ListOf(Str()), "sourceNamespace": Str(),
}

VIRTUAL_SERVICE = Obj("VirtualService", {
    "hosts": ListOf(Str()), "gateways": ListOf(Str()), "http": ListOf(Anything()),
    "tls": ListOf(Obj("TLSRoute", {
        "match": ListOf(Obj("TLSMatchAttributes", {**_L4_MATCH_FIELDS, "sniHosts": ListOf(Str())})),
        "route": ListOf(ROUTE_DESTINATION),
    })),
    "tcp": ListOf(Obj("TCPRoute", {
        "match": ListOf(Obj("L4MatchAttributes", {**_L4_MATCH_FIELDS, "sourceSubnet": Str()})),
        "route": ListOf(ROUTE_DESTINATION),
    })),
    "exportTo": ListOf(Str()),
})

_WORKLOAD_FIELDS: dict[str, Spec] = {
    "address": Str(), "ports": MapOf(Int()), "labels": LABELS, "network": Str(),
    "locality": Str(), "weight": Int(), "serviceAccount": Str(),
}
WORKLOAD_ENTRY = Obj("WorkloadEntry", _WORKLOAD_FIELDS)

SERVICE_ENTRY = Obj("ServiceEntry", {
    "hosts": ListOf(Str()), "addresses": ListOf(Str()),
    "ports": ListOf(Obj("ServicePort", {"number": Int(), "protocol": Str(), "name": Str(),
                                        "targetPort": Int()})),
    "location": Str(), "resolution": Str(),
    "endpoints": ListOf(Obj("WorkloadEntry", _WORKLOAD_FIELDS)),
    "workloadSelector": Obj("WorkloadSelector", {"labels": LABELS}),
    "exportTo": ListOf(Str()), "subjectAltNames": ListOf(Str()),
})

_CONSISTENT_HASH = Obj("ConsistentHashLB", {
    "httpHeaderName": Str(), "httpCookie": Anything(), "useSourceIp": Bool(),
    "httpQueryParameterName": Str(), "ringHash": Obj("RingHash", {"minimumRingSize": Int()}),
    "maglev": Obj("MagLev", {"tableSize": Int()}), "minimumRingSize": Int(),
})
_LOAD_BALANCER = Obj("LoadBalancerSettings", {
    "simple": Str(), "consistentHash": _CONSISTENT_HASH, "localityLbSetting": Anything(),
    "warmupDurationSecs": Duration(),
    "warmup": Obj("WarmupConfiguration", {"duration": Duration(), "minimumPercent": Num(),
                                          "aggression": Num()}),
    "zoneAwareLbSetting": Anything(),
})
_CONNECTION_POOL = Obj("ConnectionPoolSettings", {
    "tcp": Obj("TCPSettings", {
        "maxConnections": Int(), "connectTimeout": Duration(),
        "tcpKeepalive": Obj("TcpKeepalive", {"probes": Int(), "time": Duration(),
                                            "interval": Duration()}),
        "maxConnectionDuration": Duration(), "idleTimeout": Duration(),
    }),
    "http": Anything(),
})
_OUTLIER = Obj("OutlierDetection", {
    "splitExternalLocalOriginErrors": Bool(), "consecutiveLocalOriginFailures": Int(),
    "consecutiveGatewayErrors": Int(), "consecutive5xxErrors": Int(), "interval": Duration(),
    "baseEjectionTime": Duration(), "maxEjectionPercent": Int(), "minHealthPercent": Int(),
    "consecutiveErrors": Int(),
})
_CLIENT_TLS = Obj("ClientTLSSettings", {
    "mode": Str(), "clientCertificate": Str(), "privateKey": Str(), "caCertificates": Str(),
    "credentialName": Str(), "subjectAltNames": ListOf(Str()), "sni": Str(),
    "insecureSkipVerify": Bool(), "caCrl": Str(),
})
_PORT_POLICY = Obj("PortTrafficPolicy", {
    "port": PORT_SELECTOR, "loadBalancer": _LOAD_BALANCER, "connectionPool": _CONNECTION_POOL,
    "outlierDetection": _OUTLIER, "tls": _CLIENT_TLS,
})
TRAFFIC_POLICY = Obj("TrafficPolicy", {
    "loadBalancer": _LOAD_BALANCER, "connectionPool": _CONNECTION_POOL,
    "outlierDetection": _OUTLIER, "tls": _CLIENT_TLS, "portLevelSettings": ListOf(_PORT_POLICY),
    "tunnel": Obj("TunnelSettings", {"protocol": Str(), "targetHost": Str(), "targetPort": Int()}),
    "proxyProtocol": Obj("ProxyProtocol", {"version": Str()}), "retryBudget": Anything(),
})
DESTINATION_RULE = Obj("DestinationRule", {
    "host": Str(), "trafficPolicy": TRAFFIC_POLICY,
    "subsets": ListOf(Obj("Subset", {"name": Str(), "labels": LABELS,
                                     "trafficPolicy": TRAFFIC_POLICY})),
    "exportTo": ListOf(Str()),
    "workloadSelector": Obj("WorkloadSelector", {"matchLabels": LABELS}),
})

#: AuthorizationPolicy (security.istio.io): the Source and Operation field names.
AUTHZ_SOURCE_FIELDS = (
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
    "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
    "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
)
AUTHZ_OPERATION_FIELDS = (
    "hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths",
)
_TARGET_REF = Obj("PolicyTargetReference", {
    "group": Str(), "kind": Str(), "name": Str(), "namespace": Str()})
AUTHORIZATION_POLICY = Obj("AuthorizationPolicy", {
    "selector": Obj("WorkloadSelector", {"matchLabels": LABELS}),
    "targetRef": _TARGET_REF,
    "targetRefs": ListOf(_TARGET_REF),
    "rules": ListOf(Obj("Rule", {
        "from": ListOf(Obj("Rule.From", {
            "source": Obj("Source", {f: ListOf(Str()) for f in AUTHZ_SOURCE_FIELDS})})),
        "to": ListOf(Obj("Rule.To", {
            "operation": Obj("Operation", {f: ListOf(Str()) for f in AUTHZ_OPERATION_FIELDS})})),
        "when": ListOf(Obj("Condition", {
            "key": Str(), "values": ListOf(Str()), "notValues": ListOf(Str())})),
    })),
    "action": Str(),
    "provider": Obj("ExtensionProvider", {"name": Str()}),
})

SPECS: dict[str, Obj] = {
    "Gateway": GATEWAY,
    "VirtualService": VIRTUAL_SERVICE,
    "ServiceEntry": SERVICE_ENTRY,
    "WorkloadEntry": WORKLOAD_ENTRY,
    "DestinationRule": DESTINATION_RULE,
    "AuthorizationPolicy": AUTHORIZATION_POLICY,
}

TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec", "status"}


def schema_errors(value: Any, spec: Spec, path: str,
                  make: Callable[[str, str], Diagnostic]) -> list[Diagnostic]:
    """All type and unknown-field errors under ``path``, as diagnostics."""
    out: list[Diagnostic] = []
    spec.check(value, path, lambda p, msg: out.append(make(p, msg)))
    return out


__all__ = ["ERROR", "SPECS", "METADATA", "TOP_LEVEL", "parse_duration", "schema_errors", "suggest"]
