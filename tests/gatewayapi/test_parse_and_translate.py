"""Gateway API kinds: the CRD/CEL validation, attachment rules, mixing with Istio kinds."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tsgate.cli import main
from tsgate.config import GatewayOptions, load_config
from tsgate.config.gatewayapi.translate import hostname_intersection

GW = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: tcp
    protocol: TCP
    port: 9000
"""
ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: echo, port: 7}]
"""


@pytest.fixture
def load(tmp_path: Path):
    def _load(*texts: str, **kwargs: Any):
        paths = []
        for i, text in enumerate(texts):
            p = tmp_path / f"{i:02d}.yaml"
            p.write_text(textwrap.dedent(text))
            paths.append(str(p))
        return load_config(paths, GatewayOptions(**kwargs))

    return _load


def errors(result):
    return [(d.path, d.message) for d in result.errors]


def test_tcp_gateway_and_route_compile_to_a_tcp_listener(load):
    r = load(GW, ROUTE)
    assert r.ok, r.diagnostics
    (li,) = r.table.listeners
    assert (li.port, li.protocols, li.port_names) == (9000, ("TCP",), ("tcp",))
    assert li.tcp_route.name == "infra/r#tcproute[0]"
    assert li.tcp_route.source.resource == "TCPRoute infra/r"
    assert li.tcp_route.source.path == "spec.rules[0]"
    (wc,) = li.tcp_route.destinations
    assert wc.cluster.name == "outbound|7||echo.infra.svc.cluster.local"
    assert wc.cluster.resolution == "HOSTNAME"  # no ServiceEntry: DNS


def test_backend_through_a_service_entry_with_the_service_host(load):
    se = """\
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: echo, namespace: infra}
    spec:
      hosts: [echo.infra.svc.cluster.local]
      location: MESH_INTERNAL
      resolution: STATIC
      ports: [{number: 7, name: tcp, protocol: TCP, targetPort: 4007}]
      endpoints: [{address: 127.0.0.9}]
    """
    r = load(GW, ROUTE, se)
    assert r.ok, r.diagnostics
    (wc,) = r.table.listeners[0].tcp_route.destinations
    assert wc.cluster.resolution == "STATIC"
    assert [(e.address, e.port) for e in wc.cluster.endpoints] == [("127.0.0.9", 4007)]


def test_gateways_of_other_classes_are_ignored_and_gateway_class_selects(load):
    r = load(GW.replace("istio", "other"), ROUTE)
    assert r.ok and r.table.listeners == ()
    assert any("gatewayClassName 'other' is not in --gateway-class" in d.message
               for d in r.notices)
    assert not r.gateway_api.gateways  # another controller's: no status written
    r = load(GW.replace("istio", "other"), ROUTE, gateway_classes=("other",))
    assert [li.port for li in r.table.listeners] == [9000]


def test_cel_rules_and_schema_errors_name_file_line_and_path(load):
    bad = """\
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {name: gw}
    spec:
      gatewayClassName: istio
      listeners:
      - name: a
        protocol: TCP
        port: 9000
        hostname: a.example.com
      - name: a
        protocol: TLS
        port: 70000
      - name: c
        protocol: TCP
        port: 9000
        tls: {mode: Passthrough}
        allowedRoutes: {namespaces: {from: Everywhere}}
    """
    r = load(bad)
    found = errors(r)
    assert ("spec.listeners[0].hostname",
            "hostname must not be specified for protocols ['TCP', 'UDP']") in found
    assert any(p == "spec.listeners[1].name" and "must be unique" in m for p, m in found)
    assert ("spec.listeners[1].port", "70000 is out of range 1-65535") in found
    assert ("spec.listeners[1]", "tls mode must be set for protocol TLS") in found
    assert any(p == "spec.listeners[2].tls" and "tls must not be specified" in m
               for p, m in found)
    assert any(p == "spec.listeners[2].allowedRoutes.namespaces.from" and "'Everywhere'" in m
               for p, m in found)
    first = r.errors[0]
    assert first.file.endswith("00.yaml") and first.resource == "Gateway default/gw"
    assert str(first).startswith(f"{first.file}:10: error: Gateway default/gw: "
                                 "spec.listeners[0].hostname:")


def test_route_cel_rules(load):
    bad = """\
    apiVersion: gateway.networking.k8s.io/v1
    kind: TLSRoute
    metadata: {name: t}
    spec:
      parentRefs: [{name: gw}, {name: gw}]
      hostnames: [10.0.0.1, "a.*.com"]
      rules:
      - backendRefs: [{name: s}, {name: s, port: 1, weight: -1}]
      - backendRefs: [{name: s, port: 1}]
    """
    found = errors(load(bad))
    assert ("spec.parentRefs[0]", "sectionName or port must be specified when parentRefs "
            "includes 2 or more references to the same parent") in found
    assert ("spec.hostnames[0]", "Hostnames cannot contain an IP") in found
    assert any(p == "spec.hostnames[1]" for p, _ in found)
    assert ("spec.rules[0].backendRefs[0]", "Must have port for Service reference") in found
    assert ("spec.rules[0].backendRefs[1].weight", "-1 is out of range 0-1000000") in found
    assert ("spec.rules", "must have at most 1 item(s) (has 2)") in found


def test_unknown_fields_and_versions(load):
    r = load(GW.replace("    port: 9000", "    port: 9000\n    hostnmae: x"),
             ROUTE.replace("v1alpha2", "v1beta9"))
    found = errors(r)
    assert any(p == "spec.listeners[0].hostnmae" and 'did you mean "hostname"' in m
               for p, m in found)
    assert any(p == "apiVersion" and "unsupported apiVersion" in m for p, m in found)


def test_v1alpha2_tlsroute_and_v1beta1_gateway_are_read(load):
    gw = """\
    apiVersion: gateway.networking.k8s.io/v1beta1
    kind: Gateway
    metadata: {name: gw}
    spec:
      gatewayClassName: istio
      listeners:
      - {name: tls, protocol: TLS, port: 9443, hostname: "*.example.com",
         tls: {mode: Passthrough}}
    ---
    apiVersion: gateway.networking.k8s.io/v1alpha3
    kind: TLSRoute
    metadata: {name: a}
    spec:
      parentRefs: [{name: gw, sectionName: tls}]
      hostnames: [a.example.com, other.org]
      rules: [{backendRefs: [{name: a, port: 443}]}]
    ---
    apiVersion: gateway.networking.k8s.io/v1alpha2
    kind: TLSRoute
    metadata: {name: rest}
    spec:
      parentRefs: [{name: gw}]
      rules: [{backendRefs: [{name: rest, port: 443}]}]
    """
    r = load(gw)
    assert r.ok, r.diagnostics
    (li,) = r.table.listeners
    names = {c.server_names: c.route.name for c in li.tls_chains}
    assert names == {("a.example.com",): "default/a#tlsroute[0]",
                     ("*.example.com",): "default/rest#tlsroute[0]"}


def test_hostname_intersection():
    assert hostname_intersection("", []) == ["*"]
    assert hostname_intersection("*.example.com", []) == ["*.example.com"]
    assert hostname_intersection("abc.example.com", ["*.example.com"]) == ["abc.example.com"]
    assert hostname_intersection("*.example.com", ["*.com"]) == ["*.example.com"]
    assert hostname_intersection("*.com", ["*.example.com", "abc.example.com", "x.org"]) == \
        ["*.example.com", "abc.example.com"]
    assert hostname_intersection("*.example.com", ["example.com"]) == []


def test_allowed_routes_namespaces_selector_with_namespace_objects_and_option(load):
    gw = GW.replace("    port: 9000", """\
    port: 9000
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {team: a}}""")
    route = ROUTE.replace("namespace: infra}", "namespace: apps}").replace(
        "{name: gw}", "{name: gw, namespace: infra}")
    r = load(gw, route)
    assert r.table.listeners == ()
    assert r.gateway_api.condition("TCPRoute apps/r", "Accepted").reason == \
        "NotAllowedByListeners"
    ns = """\
    apiVersion: v1
    kind: Namespace
    metadata: {name: apps, labels: {team: a}}
    """
    assert [li.port for li in load(gw, route, ns).table.listeners] == [9000]
    r = load(gw, route, namespace_labels={"apps": {"team": "a"}})
    assert [li.port for li in r.table.listeners] == [9000]
    assert r.gateway_api.condition("TCPRoute apps/r", "Accepted").reason == "Accepted"


def test_allowed_routes_same_refuses_other_namespaces_and_all_accepts(load):
    route = ROUTE.replace("namespace: infra}", "namespace: apps}").replace(
        "{name: gw}", "{name: gw, namespace: infra}")
    r = load(GW, route)
    assert r.gateway_api.condition("TCPRoute apps/r", "Accepted").reason == \
        "NotAllowedByListeners"
    gw = GW.replace("    port: 9000", "    port: 9000\n    allowedRoutes: "
                    "{namespaces: {from: All}}")
    assert [li.port for li in load(gw, route).table.listeners] == [9000]


def test_istio_and_gateway_api_gateways_on_one_port_follow_the_istio_rules(load):
    istio = """\
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: igw, namespace: infra}
    spec:
      selector: {istio: ingressgateway}
      servers:
      - port: {number: 9000, name: tls, protocol: TLS}
        hosts: [a.example.com]
        tls: {mode: PASSTHROUGH}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: vs, namespace: infra}
    spec:
      hosts: [a.example.com]
      gateways: [igw]
      tls:
      - match: [{sniHosts: [a.example.com]}]
        route: [{destination: {host: a, port: {number: 443}}}]
    """
    r = load(istio, GW, ROUTE)
    assert r.ok, r.diagnostics
    (li,) = r.table.listeners
    assert li.port == 9000
    assert [c.route.name for c in li.tls_chains] == ["infra/vs#tls[0]"]
    assert li.tcp_route.name == "infra/r#tcproute[0]"  # TCP fallback beside the TLS chain
    # a second TCP server on the port: the first wins, the Gateway API one is reported
    other = GW.replace("name: gw,", "name: gw2,")
    r = load(GW, ROUTE, other, ROUTE.replace("name: r,", "name: r2,").replace(
        "{name: gw}", "{name: gw2}"))
    (li,) = r.table.listeners
    assert li.tcp_route.name == "infra/r#tcproute[0]"
    skipped = [w for w in r.warnings if "already has the TCP server" in w.message]
    assert skipped and skipped[0].resource == "Gateway infra/gw2"
    assert skipped[0].path == "spec.listeners[0]"
    assert "Gateway infra/gw spec.listeners[0]" in skipped[0].message
    assert r.gateway_api.listener("Gateway infra/gw2", "tcp").conditions[2].reason == "Pending"


def test_istio_gateway_and_gateway_api_gateway_with_one_name_are_two_objects(load):
    istio = """\
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: gw, namespace: infra}
    spec:
      selector: {istio: ingressgateway}
      servers: [{port: {number: 9001, name: tcp, protocol: TCP}, hosts: ["*"]}]
    """
    r = load(istio, GW, ROUTE)
    assert not [d for d in r.warnings if "defined again" in d.message]
    assert [li.port for li in r.table.listeners] == [9000]


def test_weight_zero_and_invalid_backends_keep_their_share_rejected(load):
    route = ROUTE.replace("[{name: echo, port: 7}]",
                          "[{name: echo, port: 7, weight: 3}, {name: x, kind: Pod, port: 7, "
                          "weight: 1}, {name: z, port: 7, weight: 0}]")
    r = load(GW, route)
    (li,) = r.table.listeners
    shares = [(wc.cluster.endpoints, wc.weight) for wc in li.tcp_route.destinations]
    assert len(shares) == 2
    assert shares[1] == ((), 1)  # the invalid Pod backend: no endpoints, its connections fail
    assert r.gateway_api.condition("TCPRoute infra/r", "ResolvedRefs").reason == "InvalidKind"


def test_cli_validate_and_routes_print_the_status(tmp_path: Path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(GW + "---\n" + ROUTE.replace("{name: gw}", "{name: gw, sectionName: nope}"))
    assert main(["validate", str(p)]) == 0
    out = capsys.readouterr().out
    assert "Gateway API status:" in out
    assert "Accepted=False (NoMatchingParent): no listener named 'nope'" in out
    assert main(["routes", str(p), "--gateway-class", "istio",
                 "--namespace-label", "infra:a=b"]) == 0
    out = capsys.readouterr().out
    assert "TCPRoute infra/r" in out and "Programmed=False (Pending)" in out
    assert main(["validate", "--json", str(p)]) == 0
    assert '"gateway_api"' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["routes", str(p), "--namespace-label", "nocolon"])


def test_tsgate_annotations_apply_to_gateway_api_gateways(load):
    gw = GW.replace("namespace: infra}", "namespace: infra, annotations: "
                    "{tsgate.io/inspect-timeout: 3s}}")
    r = load(gw, ROUTE)
    assert r.ok and not r.warnings, r.diagnostics
    assert r.table.listeners[0].annotations == (("tsgate.io/inspect-timeout", "3s"),)


def test_single_label_hostnames_across_namespaces(load):
    gw = """\
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {name: gw, namespace: infra}
    spec:
      gatewayClassName: istio
      listeners:
      - {name: db, protocol: TLS, port: 9443, hostname: db, tls: {mode: Passthrough},
         allowedRoutes: {namespaces: {from: All}}}
    ---
    apiVersion: gateway.networking.k8s.io/v1alpha2
    kind: TLSRoute
    metadata: {name: db, namespace: apps}
    spec:
      parentRefs: [{name: gw, namespace: infra}]
      hostnames: [db]
      rules: [{backendRefs: [{name: db, port: 5432}]}]
    """
    r = load(gw)
    assert r.ok, r.diagnostics
    (chain,) = r.table.listeners[0].tls_chains
    assert chain.server_names == ("db",)


def test_twistd_options(tmp_path: Path):
    from twisted.python import usage

    from tsgate.tap import Options

    opts = Options()
    opts.parseOptions(["--config", str(tmp_path), "--gateway-class", "a", "--gateway-class", "b",
                       "--namespace-label", "apps:team=x", "--namespace-label", "apps:env=y"])
    assert opts["gateway-classes"] == ["a", "b"]
    assert opts["namespace-labels"] == {"apps": {"team": "x", "env": "y"}}
    opts = Options()
    opts.parseOptions(["--config", str(tmp_path)])
    assert opts["gateway-classes"] == ["istio"]
    with pytest.raises(usage.UsageError, match="NAMESPACE:KEY=VALUE"):
        Options().parseOptions(["--config", str(tmp_path), "--namespace-label", "team=x"])


def test_label_selector_match_expressions():
    from tsgate.config.gatewayapi.model import LabelSelector

    sel = LabelSelector((("team", "a"),), (("env", "In", ("prod", "stage")),
                                           ("legacy", "DoesNotExist", ()),
                                           ("tier", "NotIn", ("db",)), ("owner", "Exists", ())))
    assert sel.matches({"team": "a", "env": "prod", "owner": "x"})
    assert not sel.matches({"team": "a", "env": "dev", "owner": "x"})
    assert not sel.matches({"team": "a", "env": "prod", "owner": "x", "legacy": "1"})
    assert not sel.matches({"team": "a", "env": "prod", "owner": "x", "tier": "db"})
    assert not sel.matches({"team": "a", "env": "prod"})
    assert not sel.matches({"team": "b", "env": "prod", "owner": "x"})


def test_reference_grant_is_per_name_kind_and_namespace(load):
    route = ROUTE.replace("[{name: echo, port: 7}]", "[{name: echo, namespace: back, port: 7}]")
    grant = """\
    apiVersion: gateway.networking.k8s.io/v1beta1
    kind: ReferenceGrant
    metadata: {name: g, namespace: back}
    spec:
      from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: infra}]
      to: [{group: "", kind: Service}]
    """
    r = load(GW, route, grant)
    assert r.gateway_api.condition("TCPRoute infra/r", "ResolvedRefs").reason == "ResolvedRefs"
    (wc,) = r.table.listeners[0].tcp_route.destinations
    assert wc.cluster.host == "echo.back.svc.cluster.local"
    r = load(GW, route, grant.replace("kind: Service}", "kind: Service, name: other}"))
    assert r.gateway_api.condition("TCPRoute infra/r", "ResolvedRefs").reason == \
        "RefNotPermitted"
    r = load(GW, route, grant.replace("kind: TCPRoute", "kind: TLSRoute"))
    assert r.gateway_api.condition("TCPRoute infra/r", "ResolvedRefs").reason == \
        "RefNotPermitted"


def test_cli_validate_with_errors_still_prints_the_status(tmp_path: Path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(GW + "---\n" + ROUTE + "---\n" + ROUTE.replace("name: r,", "name: bad,")
                 .replace("port: 7}", "}"))
    assert main(["validate", str(p)]) == 1
    captured = capsys.readouterr()
    assert "Must have port for Service reference" in captured.err
    assert "spec.rules[0].backendRefs[0]" in captured.err
    assert "TCPRoute infra/r" in captured.out
    assert "Programmed=False (Pending)" in captured.out
