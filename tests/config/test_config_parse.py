"""Kinds, apiVersions, metadata, unknown fields with "did you mean", types, defaults."""

from __future__ import annotations

import pytest

from tsgate.config.schema import parse_duration, suggest

VS = """\
apiVersion: networking.istio.io/{version}
kind: VirtualService
metadata:
  name: vs
spec:
  hosts: ["a.example.com"]
  gateways: [gw]
  tls:
  - match:
    - port: 443
      {sni_key}: [a.example.com]
    route:
    - destination:
        host: backend
"""


def errors(result):
    return [(d.path, d.message) for d in result.errors]


@pytest.mark.parametrize("version", ["v1alpha3", "v1beta1", "v1"])
def test_istio_api_versions_are_accepted(load, version):
    result = load(VS.format(version=version, sni_key="sniHosts"))
    assert errors(result) == []
    assert result.resources[0].meta.api_version == f"networking.istio.io/{version}"


def test_unknown_api_version_is_an_error(load):
    result = load(VS.format(version="v2", sni_key="sniHosts"))
    [(path, message)] = errors(result)
    assert path == "apiVersion"
    assert "unsupported apiVersion 'networking.istio.io/v2'" in message


def test_unknown_field_with_did_you_mean_and_exact_line(load):
    result = load(VS.format(version="v1", sni_key="snihosts"))
    [d] = result.errors
    assert d.path == "spec.tls[0].match[0].snihosts"
    assert d.line == 11
    assert d.resource == "VirtualService default/vs"
    assert d.message == ("unknown field 'snihosts' in TLSMatchAttributes "
                         '(did you mean "sniHosts"?)')
    assert str(d).endswith(
        ":11: error: VirtualService default/vs: spec.tls[0].match[0].snihosts: "
        "unknown field 'snihosts' in TLSMatchAttributes (did you mean \"sniHosts\"?)")


def test_misspelling_suggests_the_near_name(load):
    result = load(VS.format(version="v1", sni_key="sniHost"))
    assert errors(result) == [("spec.tls[0].match[0].sniHost",
                               "unknown field 'sniHost' in TLSMatchAttributes "
                               '(did you mean "sniHosts"?)')]


def test_unknown_field_without_a_near_name_has_no_suggestion(load):
    result = load(VS.format(version="v1", sni_key="zzzzzz"))
    assert errors(result) == [("spec.tls[0].match[0].zzzzzz",
                               "unknown field 'zzzzzz' in TLSMatchAttributes")]


def test_unknown_top_level_field(load):
    result = load("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
                  "specs: {}\n")
    assert ("specs", "unknown field 'specs' in Gateway (did you mean \"spec\"?)") in errors(result)


def test_unknown_metadata_field(load):
    result = load("apiVersion: networking.istio.io/v1\nkind: Gateway\n"
                  "metadata: {name: g, namespce: x}\nspec: {servers: []}\n")
    assert errors(result) == [("metadata.namespce",
                               "unknown field 'namespce' in ObjectMeta "
                               '(did you mean "namespace"?)')]


def test_wrong_types_are_errors(load):
    result = load("""\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: g}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: "31400", name: tcp, protocol: TCP}
            hosts: "*"
        """)
    assert errors(result) == [
        ("spec.servers[0].port.number", "expected an integer, got string '31400'"),
        ("spec.servers[0].hosts", "expected a list, got string '*'"),
    ]


def test_invalid_duration_is_a_parse_error(load):
    result = load("""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: d}
        spec:
          host: x
          trafficPolicy: {connectionPool: {tcp: {connectTimeout: 10 seconds}}}
        """)
    assert errors(result) == [(
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "invalid duration '10 seconds' (use a number and unit: ms, s, m, h)")]


def test_missing_name_kind_and_api_version(load):
    r = load("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {}\nspec: {}\n",
             "apiVersion: networking.istio.io/v1\nmetadata: {name: x}\n",
             "kind: Gateway\nmetadata: {name: x}\n",
             "- just a list\n")
    messages = [d.message for d in r.errors]
    assert messages[0] == "metadata.name is required"
    assert messages[1] == "kind is required (a string)"
    assert messages[2] == "apiVersion is required (a string)"
    assert messages[3].startswith("expected a Kubernetes object")


def test_namespace_defaults_and_cli_override(load):
    text = VS.format(version="v1", sni_key="sniHosts")
    assert load(text).resources[0].meta.namespace == "default"
    assert load(text, default_namespace="istioinaction").resources[0].meta.namespace == \
        "istioinaction"
    explicit = text.replace("  name: vs\n", "  name: vs\n  namespace: prod\n")
    assert load(explicit, default_namespace="x").resources[0].meta.namespace == "prod"


def test_istio_defaults_are_applied(load):
    r = load("""\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: g}
        spec:
          servers:
          - port: {number: 443, name: tls, protocol: tls}
            hosts: [a.example.com]
            tls: {}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: se}
        spec:
          hosts: [a.example.com]
          ports: [{number: 1, name: tcp, protocol: TCP}]
        """)
    gw, se = r.resources
    assert gw.servers[0].tls.mode == "PASSTHROUGH"
    assert gw.servers[0].port.protocol == "TLS"  # protocols are case-insensitive
    assert (se.location, se.resolution) == ("MESH_EXTERNAL", "NONE")


def test_gateway_api_http_kinds_and_other_istio_kinds_are_skipped(load):
    r = load("""\
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: h}
        ---
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: s}
        """)
    assert r.ok and r.resources == ()
    assert "serves TCPRoute and TLSRoute" in r.notices[0].message
    assert "tsgate does not use this kind" in r.notices[1].message


def test_http_routes_are_accepted_opaquely(load):
    r = load("""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: v}
        spec:
          hosts: [a.example.com]
          gateways: [g]
          http: [{route: [{destination: {host: x}}], anything: goes}]
        """)
    assert r.errors == ()
    assert r.resources[0].http_count == 1


@pytest.mark.parametrize("text,seconds", [
    ("10s", 10.0), ("1.5s", 1.5), ("500ms", 0.5), ("1h30m", 5400.0), ("0s", 0.0), ("0", 0.0),
    ("2m", 120.0), ("100us", 0.0001),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "10 s", "1d", "-1s", "1s2"])
def test_parse_duration_rejects(text):
    assert parse_duration(text) is None


def test_suggest_is_case_insensitive_first():
    assert suggest("SNIHOSTS", {"sniHosts": 1, "port": 1}) == ' (did you mean "sniHosts"?)'
    assert suggest("destinationSubnet", {"destinationSubnets": 1}) == \
        ' (did you mean "destinationSubnets"?)'


def test_misspelt_istio_kind_is_an_error_with_suggestion(load):
    r = load("apiVersion: networking.istio.io/v1\nkind: VirtualSerivce\nmetadata: {name: v}\n")
    assert errors(r) == [("kind", "unknown kind 'VirtualSerivce' in networking.istio.io "
                                  '(did you mean "VirtualService"?)')]
