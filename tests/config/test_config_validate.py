"""
A table of invalid configurations: each names the exact field path and reason.

Every case starts from a small valid set of resources and changes one thing
(``set_path``), so the one expected error is the point of the case; the
test also checks that nothing else is an error in that case's resources.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from tsgate.config.loader import parse_yaml

DELETE = object()


def gateway(name: str = "g", **server: Any) -> dict[str, Any]:
    s = {"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}
    s.update(server)
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
            "metadata": {"name": name},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [s]}}


TLS_GW = gateway(port={"number": 443, "name": "tls", "protocol": "TLS"},
                 hosts=["a.example.com"], tls={"mode": "PASSTHROUGH"})

VS_TCP = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
          "metadata": {"name": "vs"},
          "spec": {"hosts": ["*"], "gateways": ["g"],
                   "tcp": [{"match": [{"port": 31400}],
                            "route": [{"destination": {"host": "echo",
                                                       "port": {"number": 2701}}}]}]}}

VS_TLS = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
          "metadata": {"name": "vs"},
          "spec": {"hosts": ["a.example.com"], "gateways": ["g"],
                   "tls": [{"match": [{"port": 443, "sniHosts": ["a.example.com"]}],
                            "route": [{"destination": {"host": "backend",
                                                       "port": {"number": 443}}}]}]}}

SE = {"apiVersion": "networking.istio.io/v1beta1", "kind": "ServiceEntry",
      "metadata": {"name": "se"},
      "spec": {"hosts": ["echo.example.com"],
               "ports": [{"number": 2701, "name": "tcp", "protocol": "TCP"}],
               "resolution": "STATIC", "endpoints": [{"address": "127.0.0.1"}]}}

DR = {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
      "metadata": {"name": "dr"},
      "spec": {"host": "echo", "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
               "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "1s"}}}}}

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def set_path(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``path`` (``spec.tcp[0].route``) set, or deleted with DELETE."""
    doc = copy.deepcopy(doc)
    steps = [int(i) if i else k for k, i in _STEP.findall(path)]
    node: Any = doc
    for step in steps[:-1]:
        node = node[step]
    if value is DELETE:
        del node[steps[-1]]
    elif isinstance(node, list) and steps[-1] == len(node):
        node.append(value)
    else:
        node[steps[-1]] = value
    return doc


def vs_tcp_dest(**dest: Any) -> dict[str, Any]:
    return set_path(VS_TCP, "spec.tcp[0].route[0].destination", dest)


def se_with(path: str, value: Any) -> dict[str, Any]:
    return set_path(SE, path, value)


def dr_with(path: str, value: Any) -> dict[str, Any]:
    return set_path(DR, path, value)


# (id, documents, kind of the resource with the error, field path, reason)
CASES = [
    # ---- Gateway
    ("gw-no-servers", [set_path(gateway(), "spec.servers", [])],
     "Gateway", "spec.servers", "at least one server is required"),
    ("gw-port-too-big", [set_path(gateway(), "spec.servers[0].port.number", 70000), VS_TCP],
     "Gateway", "spec.servers[0].port.number", "port number 70000 is out of range 1-65535"),
    ("gw-port-zero", [set_path(gateway(), "spec.servers[0].port.number", 0), VS_TCP],
     "Gateway", "spec.servers[0].port.number", "port number 0 is out of range 1-65535"),
    ("gw-port-number-missing", [set_path(gateway(), "spec.servers[0].port.number", DELETE)],
     "Gateway", "spec.servers[0].port", "port number is required"),
    ("gw-port-name-missing", [set_path(gateway(), "spec.servers[0].port.name", DELETE)],
     "Gateway", "spec.servers[0].port", "port name is required"),
    ("gw-protocol-missing", [set_path(gateway(), "spec.servers[0].port.protocol", DELETE)],
     "Gateway", "spec.servers[0].port", "port protocol is required"),
    ("gw-protocol-invalid", [set_path(gateway(), "spec.servers[0].port.protocol", "SCTP")],
     "Gateway", "spec.servers[0].port.protocol", "invalid protocol 'SCTP' (one of HTTP, HTTPS"),
    ("gw-target-port", [set_path(gateway(), "spec.servers[0].port.targetPort", 8080), VS_TCP],
     "Gateway", "spec.servers[0].port.targetPort", "targetPort has no effect on Gateways"),
    ("gw-duplicate-port-name",
     [set_path(gateway(), "spec.servers[1]",
               {"port": {"number": 31401, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}),
      VS_TCP],
     "Gateway", "spec.servers[1].port.name",
     "port name 'tcp' is not unique: also used by spec.servers[0]"),
    ("gw-hosts-empty", [set_path(gateway(), "spec.servers[0].hosts", [])],
     "Gateway", "spec.servers[0].hosts", "at least one host is required"),
    ("gw-host-partial-wildcard", [gateway(hosts=["*w.example.com"])],
     "Gateway", "spec.servers[0].hosts[0]",
     "host '*w.example.com' is invalid: a wildcard is only allowed as the whole first label"),
    ("gw-host-bad-namespace", [gateway(hosts=["Bad_NS/a.example.com"])],
     "Gateway", "spec.servers[0].hosts[0]", "namespace part of host 'Bad_NS/a.example.com'"),
    ("gw-tls-protocol-without-tls", [set_path(TLS_GW, "spec.servers[0].tls", DELETE)],
     "Gateway", "spec.servers[0]", "server must have TLS settings for HTTPS/TLS protocols"),
    ("gw-tcp-with-tls", [gateway(tls={"mode": "PASSTHROUGH"}), VS_TCP],
     "Gateway", "spec.servers[0].tls",
     "server cannot have TLS settings for non-HTTPS/TLS protocol TCP"),
    ("gw-http-with-tls",
     [gateway(port={"number": 80, "name": "http", "protocol": "HTTP"}, tls={"mode": "SIMPLE"})],
     "Gateway", "spec.servers[0].tls", "server cannot have TLS settings for plain text HTTP"),
    ("gw-tls-mode-invalid", [set_path(TLS_GW, "spec.servers[0].tls.mode", "PASSTHRU"), VS_TLS],
     "Gateway", "spec.servers[0].tls.mode", "invalid TLS mode 'PASSTHRU'"),
    ("gw-simple-without-certs", [set_path(TLS_GW, "spec.servers[0].tls.mode", "SIMPLE")],
     "Gateway", "spec.servers[0].tls",
     "SIMPLE TLS requires serverCertificate and privateKey, credentialName"),
    ("gw-simple-credential-without-credentials-dir",
     [set_path(TLS_GW, "spec.servers[0].tls", {"mode": "SIMPLE", "credentialName": "c"}), VS_TLS],
     "Gateway", "spec.servers[0].tls.credentialName",
     "credential 'c': credentials are read from files under --credentials DIR"),
    ("gw-mutual-certificate-file-missing",
     [set_path(TLS_GW, "spec.servers[0].tls",
               {"mode": "MUTUAL", "serverCertificate": "/nonexistent/tls.crt",
                "privateKey": "/nonexistent/tls.key", "caCertificates": "/nonexistent/ca.crt"}),
      VS_TLS],
     "Gateway", "spec.servers[0].tls.serverCertificate",
     "cannot read certificate /nonexistent/tls.crt: No such file or directory"),
    ("gw-tls-version-invalid",
     [set_path(TLS_GW, "spec.servers[0].tls.minProtocolVersion", "TLSV9"), VS_TLS],
     "Gateway", "spec.servers[0].tls.minProtocolVersion", "invalid TLS version 'TLSV9'"),
    ("gw-bind-not-ip", [gateway(bind="localhost"), VS_TCP],
     "Gateway", "spec.servers[0].bind",
     "bind 'localhost' must be an IP address or a unix:// path"),
    ("gw-name-with-dot", [set_path(gateway(), "metadata.name", "g.x")],
     "Gateway", "metadata.name", "Gateway name 'g.x' is not a DNS-1123 label"),
    ("gw-bad-namespace", [set_path(gateway(), "metadata.namespace", "Prod")],
     "Gateway", "metadata.namespace", "namespace 'Prod' is not a DNS-1123 label"),
    # ---- VirtualService
    ("vs-hosts-missing", [gateway(), set_path(VS_TCP, "spec.hosts", DELETE)],
     "VirtualService", "spec.hosts", "at least one host is required"),
    ("vs-star-host-on-mesh", [gateway(), set_path(VS_TCP, "spec.gateways", DELETE)],
     "VirtualService", "spec.hosts[0]",
     "wildcard host '*' is not allowed for virtual services bound to the mesh gateway"),
    ("vs-overlapping-hosts",
     [TLS_GW, set_path(VS_TLS, "spec.hosts", ["*.example.com", "a.example.com"])],
     "VirtualService", "spec.hosts[1]",
     "duplicate or overlapping host 'a.example.com': overlaps spec.hosts[0] '*.example.com'"),
    ("vs-no-routes", [gateway(), set_path(VS_TCP, "spec.tcp", DELETE)],
     "VirtualService", "spec", "http, tcp or tls must be provided in virtual service"),
    ("vs-tcp-route-empty", [gateway(), set_path(VS_TCP, "spec.tcp[0].route", [])],
     "VirtualService", "spec.tcp[0].route", "TCP route is required"),
    ("vs-tls-route-empty", [TLS_GW, set_path(VS_TLS, "spec.tls[0].route", [])],
     "VirtualService", "spec.tls[0]", "TLS route is required"),
    ("vs-tls-no-match", [TLS_GW, set_path(VS_TLS, "spec.tls[0].match", DELETE)],
     "VirtualService", "spec.tls[0]", "TLS route must have at least one match condition"),
    ("vs-tls-no-sni", [TLS_GW, set_path(VS_TLS, "spec.tls[0].match[0].sniHosts", DELETE)],
     "VirtualService", "spec.tls[0].match[0]",
     "at least one sniHosts entry is required in a TLS match"),
    ("vs-sni-not-subset",
     [TLS_GW, set_path(VS_TLS, "spec.tls[0].match[0].sniHosts", ["a.example.com",
                                                                  "b.example.com"])],
     "VirtualService", "spec.tls[0].match[0].sniHosts[1]",
     "SNI host 'b.example.com' is not a compatible subset of any of the virtual service "
     "hosts: [a.example.com]"),
    ("vs-sni-wider-than-host",
     [TLS_GW, set_path(VS_TLS, "spec.tls[0].match[0].sniHosts", ["*.example.com"])],
     "VirtualService", "spec.tls[0].match[0].sniHosts[0]",
     "SNI host '*.example.com' is not a compatible subset"),
    ("vs-sni-invalid", [TLS_GW, set_path(VS_TLS, "spec.tls[0].match[0].sniHosts[0]", "a..com")],
     "VirtualService", "spec.tls[0].match[0].sniHosts[0]",
     "host 'a..com' is invalid: label '' is not a DNS-1123 label"),
    ("vs-match-port-zero", [gateway(), set_path(VS_TCP, "spec.tcp[0].match[0].port", 0)],
     "VirtualService", "spec.tcp[0].match[0].port", "port number 0 is out of range 1-65535"),
    ("vs-bad-subnet",
     [gateway(), set_path(VS_TCP, "spec.tcp[0].match[0].destinationSubnets", ["10.0.0.0/33"])],
     "VirtualService", "spec.tcp[0].match[0].destinationSubnets[0]",
     "'10.0.0.0/33' is not an IP address or CIDR block"),
    ("vs-destination-host-missing", [gateway(), vs_tcp_dest(port={"number": 1})],
     "VirtualService", "spec.tcp[0].route[0].destination", "destination host is required"),
    ("vs-destination-host-star", [gateway(), vs_tcp_dest(host="*")],
     "VirtualService", "spec.tcp[0].route[0].destination.host",
     "destination host must not be '*'"),
    ("vs-destination-port-range", [gateway(), vs_tcp_dest(host="echo", port={"number": 70000})],
     "VirtualService", "spec.tcp[0].route[0].destination.port.number",
     "port number 70000 is out of range 1-65535"),
    ("vs-subset-name-invalid", [gateway(), vs_tcp_dest(host="echo", subset="V_1")],
     "VirtualService", "spec.tcp[0].route[0].destination.subset",
     "subset name 'V_1' is not a DNS-1123 label"),
    ("vs-negative-weight",
     [gateway(), set_path(VS_TCP, "spec.tcp[0].route[0].weight", -1)],
     "VirtualService", "spec.tcp[0].route[0].weight", "weight -1 must be >= 0"),
    ("vs-total-weight-zero",
     [gateway(), set_path(VS_TCP, "spec.tcp[0].route",
                          [{"destination": {"host": "a"}, "weight": 0},
                           {"destination": {"host": "b"}}])],
     "VirtualService", "spec.tcp[0].route", "total destination weight = 0"),
    # (Istio's labels allow upper case, so "Bad/g" is valid there; an underscore is not)
    ("vs-gateway-ref-invalid", [gateway(), set_path(VS_TCP, "spec.gateways", ["bad_ns/g"])],
     "VirtualService", "spec.gateways[0]", "namespace of gateway 'bad_ns/g'"),
    ("vs-export-to-mixed", [gateway(), set_path(VS_TCP, "spec.exportTo", ["*", "."])],
     "VirtualService", "spec.exportTo", "exportTo '*' (public) cannot be combined"),
    # (a missing subset or ServiceEntry port is valid Istio: a warning, see
    # tests/config/test_config_missing_cluster.py)
    ("vs-to-resolution-none",
     [gateway(), set_path(se_with("spec.resolution", "NONE"), "spec.endpoints", DELETE),
      vs_tcp_dest(host="echo.example.com")],
     "VirtualService", "spec.tcp[0].route[0].destination.host",
     "ServiceEntry default/se has resolution NONE"),
    # ---- ServiceEntry
    ("se-host-star", [se_with("spec.hosts", ["*"])],
     "ServiceEntry", "spec.hosts[0]", "host '*' is not allowed here"),
    ("se-hosts-missing", [se_with("spec.hosts", DELETE)],
     "ServiceEntry", "spec.hosts", "at least one host is required"),
    ("se-duplicate-port",
     [se_with("spec.ports", [{"number": 2701, "name": "a", "protocol": "TCP"},
                             {"number": 2701, "name": "b", "protocol": "TCP"}])],
     "ServiceEntry", "spec.ports[1].number",
     "port number 2701 is not unique: also spec.ports[0]"),
    ("se-port-name-missing", [se_with("spec.ports[0].name", DELETE)],
     "ServiceEntry", "spec.ports[0]", "port name is required"),
    ("se-port-protocol-invalid", [se_with("spec.ports[0].protocol", "QUIC")],
     "ServiceEntry", "spec.ports[0].protocol", "invalid protocol 'QUIC'"),
    ("se-resolution-invalid", [se_with("spec.resolution", "STATICK")],
     "ServiceEntry", "spec.resolution", "invalid resolution 'STATICK'"),
    ("se-location-invalid", [se_with("spec.location", "INSIDE")],
     "ServiceEntry", "spec.location", "invalid location 'INSIDE'"),
    ("se-none-with-endpoints", [se_with("spec.resolution", "NONE")],
     "ServiceEntry", "spec.endpoints", "no endpoints should be provided for resolution NONE"),
    ("se-static-endpoint-name", [se_with("spec.endpoints[0].address", "echo.local")],
     "ServiceEntry", "spec.endpoints[0].address",
     "address 'echo.local' must be an IP address with resolution STATIC"),
    ("se-endpoint-port-name-unknown", [se_with("spec.endpoints[0].ports", {"web": 8080})],
     "ServiceEntry", "spec.endpoints[0].ports.web",
     "endpoint port name 'web' is not a port name of the service (tcp)"),
    ("se-cidr-with-dns",
     [set_path(se_with("spec.resolution", "DNS"), "spec.addresses", ["10.0.0.0/24"])],
     "ServiceEntry", "spec.addresses[0]",
     "CIDR address '10.0.0.0/24' is only allowed with resolution NONE or STATIC"),
    ("se-dns-wildcard-without-endpoints",
     [set_path(set_path(se_with("spec.resolution", "DNS"), "spec.hosts", ["*.example.com"]),
               "spec.endpoints", DELETE)],
     "ServiceEntry", "spec.hosts[0]",
     "wildcard host '*.example.com' needs endpoints with resolution DNS"),
    ("se-dns-round-robin-two-endpoints",
     [set_path(se_with("spec.resolution", "DNS_ROUND_ROBIN"), "spec.endpoints",
               [{"address": "a.example.com"}, {"address": "b.example.com"}])],
     "ServiceEntry", "spec.endpoints", "resolution DNS_ROUND_ROBIN allows at most one endpoint"),
    ("se-endpoints-and-selector",
     [se_with("spec.workloadSelector", {"labels": {"app": "x"}})],
     "ServiceEntry", "spec.workloadSelector",
     "only one of endpoints or workloadSelector may be set"),
    # ---- DestinationRule
    ("dr-host-missing", [dr_with("spec.host", DELETE)],
     "DestinationRule", "spec", "host is required"),
    ("dr-empty-traffic-policy", [dr_with("spec.trafficPolicy", {})],
     "DestinationRule", "spec.trafficPolicy", "trafficPolicy must have at least one field"),
    ("dr-duplicate-subset",
     [dr_with("spec.subsets", [{"name": "v1"}, {"name": "v1"}])],
     "DestinationRule", "spec.subsets[1].name",
     "duplicate subset name 'v1': also spec.subsets[0]"),
    ("dr-subset-name-missing", [dr_with("spec.subsets", [{"labels": {"a": "b"}}])],
     "DestinationRule", "spec.subsets[0]", "subset name is required"),
    ("dr-connect-timeout-too-small",
     [dr_with("spec.trafficPolicy.connectionPool.tcp.connectTimeout", "100us")],
     "DestinationRule", "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
     "duration must be at least 1ms"),
    ("dr-max-connections-negative",
     [dr_with("spec.trafficPolicy.connectionPool.tcp.maxConnections", -1)],
     "DestinationRule", "spec.trafficPolicy.connectionPool.tcp.maxConnections",
     "maxConnections -1 must be >= 0"),
    ("dr-lb-invalid", [dr_with("spec.trafficPolicy.loadBalancer", {"simple": "FASTEST"})],
     "DestinationRule", "spec.trafficPolicy.loadBalancer.simple",
     "invalid load balancer 'FASTEST'"),
    ("dr-lb-simple-and-hash",
     [dr_with("spec.trafficPolicy.loadBalancer",
              {"simple": "RANDOM", "consistentHash": {"useSourceIp": True}})],
     "DestinationRule", "spec.trafficPolicy.loadBalancer",
     "only one of simple or consistentHash may be set"),
    ("dr-proxy-protocol-version", [dr_with("spec.trafficPolicy.proxyProtocol", {"version": "V3"})],
     "DestinationRule", "spec.trafficPolicy.proxyProtocol.version",
     "invalid PROXY protocol version 'V3' (V1 or V2)"),
    ("dr-outlier-percent",
     [dr_with("spec.trafficPolicy.outlierDetection", {"maxEjectionPercent": 150})],
     "DestinationRule", "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
     "maxEjectionPercent 150 must be in 0-100"),
    ("dr-subset-unknown-field",
     [dr_with("spec.subsets[0]", {"name": "v1", "lables": {"a": "b"}})],
     "DestinationRule", "spec.subsets[0].lables",
     "unknown field 'lables' in Subset (did you mean \"labels\"?)"),
    ("dr-client-tls-mode", [dr_with("spec.trafficPolicy.tls", {"mode": "STRICT"})],
     "DestinationRule", "spec.trafficPolicy.tls.mode", "invalid TLS mode 'STRICT'"),
]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("docs,kind,path,reason", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_invalid_configuration(load, docs, kind, path, reason):
    text = yaml.safe_dump_all(docs, sort_keys=False)
    result = load(text)
    assert not result.ok
    assert result.table.listeners == ()  # errors: no table at all
    hits = [d for d in result.errors if d.path == path and reason in d.message]
    assert hits, "\n".join(str(d) for d in result.errors)
    [d] = hits[:1]
    assert d.resource.startswith(kind + " ")
    assert d.file.endswith("00.yaml")
    # The line is the field's own line (or, for a missing field, its nearest ancestor's).
    [doc] = [doc for doc in parse_yaml(text, "x")[0]
             if f"{doc.data['kind']} " in d.resource
             and d.resource.endswith("/" + doc.data["metadata"]["name"])]
    if path in doc.positions:
        assert d.line == doc.positions[path]
        last = path.replace("]", "").split(".")[-1].split("[")[0]
        assert last in text.splitlines()[d.line - 1] or path.endswith("]")
    else:
        assert d.line == doc.line_of(path) and d.line >= doc.line
    rendered = str(d)
    assert f":{d.line}: error: {d.resource}: {path}: " in rendered
    assert reason in rendered


# ------------------------------------------------------------------ warnings


def warnings_of(result):
    return [(d.path, d.message) for d in result.warnings]


def test_unreachable_rule_after_match_all_is_a_warning(load):
    vs = set_path(VS_TCP, "spec.tcp", [
        {"route": [{"destination": {"host": "a"}}]},
        {"match": [{"port": 31400}], "route": [{"destination": {"host": "b"}}]},
    ])
    result = load(yaml.safe_dump_all([gateway(), vs]))
    assert result.ok
    assert ("spec.tcp[1]", "unreachable rule: spec.tcp[0] before it matches every connection "
            "(first match wins)") in warnings_of(result)


def test_duplicate_match_is_ineffective(load):
    vs = set_path(VS_TCP, "spec.tcp", [
        {"match": [{"port": 31400}], "route": [{"destination": {"host": "a"}}]},
        {"match": [{"port": 31400}], "route": [{"destination": {"host": "b"}}]},
    ])
    result = load(yaml.safe_dump_all([gateway(), vs]))
    assert ("spec.tcp[1].match[0]", "ineffective match: the same as spec.tcp[0].match[0]") \
        in warnings_of(result)


def test_certificates_on_passthrough_are_ignored_with_a_warning(load):
    gw = set_path(TLS_GW, "spec.servers[0].tls.credentialName", "cert")
    result = load(yaml.safe_dump_all([gw, VS_TLS]))
    assert result.ok
    assert ("spec.servers[0].tls", "PASSTHROUGH does not terminate TLS: certificates will be "
            "ignored (credentialName)") in warnings_of(result)


def test_http_server_is_skipped_with_a_warning(load):
    gw = gateway(port={"number": 80, "name": "http", "protocol": "HTTP"})
    result = load(yaml.safe_dump_all([gw]))
    assert result.ok
    assert ("spec.servers[0]", "HTTP server skipped: tsgate is a layer-4 gateway and serves TCP "
            "and TLS passthrough servers only") in warnings_of(result)
    assert result.table.listeners == ()


def test_ip_sni_host_is_a_warning(load):
    vs = set_path(set_path(VS_TLS, "spec.hosts", ["*"]), "spec.tls[0].match[0].sniHosts",
                  ["10.0.0.1"])
    result = load(yaml.safe_dump_all([TLS_GW, vs]))
    assert ("spec.tls[0].match[0].sniHosts[0]",
            "sniHost '10.0.0.1' is an IP address; clients do not send IPs as SNI") \
        in warnings_of(result)


def test_every_error_is_reported_not_just_the_first(load):
    bad_gw = set_path(set_path(gateway(), "spec.servers[0].port.number", 0),
                      "spec.servers[0].hosts", [])
    bad_vs = set_path(VS_TCP, "spec.tcp[0].route", [])
    result = load(yaml.safe_dump_all([bad_gw], sort_keys=False),
                  yaml.safe_dump_all([bad_vs], sort_keys=False))
    assert [d.path for d in result.errors] == [
        "spec.servers[0].port.number", "spec.servers[0].hosts", "spec.tcp[0].route"]


def test_l4_match_attributes_that_gateways_ignore_are_warned(load):
    vs = set_path(VS_TCP, "spec.tcp[0].match[0]",
                  {"port": 31400, "sourceLabels": {"app": "x"},
                   "destinationSubnets": ["10.0.0.0/8"]})
    result = load(yaml.safe_dump_all([gateway(), vs]))
    assert result.ok
    paths = {w.path for w in result.warnings if "not evaluated at gateways" in w.message}
    assert paths == {"spec.tcp[0].match[0].sourceLabels",
                     "spec.tcp[0].match[0].destinationSubnets"}


def test_service_entry_hosts_sharing_a_tcp_port_without_addresses(load):
    """Istio: IST0134 per TCP port without addresses, and (resolution is not NONE) an error
    for several hosts on a non-HTTP, non-TLS port (validation.go ValidateServiceEntry)."""
    se = se_with("spec.hosts", ["a.example.com", "b.example.com"])
    result = load(yaml.safe_dump_all([se]))
    [w] = [d for d in result.diagnostics if d.code == "IST0134"]
    assert w.path == "spec.ports[0]"
    assert "addresses are required for ports serving TCP (or unset) protocol" in w.message
    assert ("spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports") in \
        [(d.path, d.message) for d in result.errors]


def test_ip_host_on_a_mesh_virtual_service_is_accepted(load):
    """Istio accepts an IP address as a host of a mesh VirtualService (validation.go:
    a host that fails the domain check is an error only if it is not an IP)."""
    vs = set_path(set_path(VS_TCP, "spec.gateways", ["mesh"]), "spec.hosts", ["10.1.2.3"])
    result = load(yaml.safe_dump_all([gateway(), vs]))
    assert result.ok, "\n".join(str(d) for d in result.errors)
