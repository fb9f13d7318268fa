"""
The status the Gateway API conformance tests expect, from the verbatim
conformance manifests, computed without an API server (``ConfigResult.gateway_api``,
what ``tsgate validate``/``routes`` print and ``/config_dump`` serves).

Each test names the conformance test (conformance/tests/<name>.go of
kubernetes-sigs/gateway-api) whose assertions it mirrors.
"""

from __future__ import annotations

from pathlib import Path

from tests.gatewayapi.conformance import INFRA, load


def cond(result, ref, type_, parent=""):
    c = result.gateway_api.condition(ref, type_, parent)
    return (c.status, c.reason)


def test_tcproute_invalid_backendref_nonexistent():
    """tcproute-invalid-backendref-nonexistent.go: ResolvedRefs=False BackendNotFound."""
    r = load("tcproute-invalid-backendref-nonexistent")
    route = f"TCPRoute {INFRA}/tcp-route-invalid-backend-ref-nonexistent"
    assert cond(r, route, "Accepted") == ("True", "Accepted")
    assert cond(r, route, "ResolvedRefs") == ("False", "BackendNotFound")
    assert "nonexistent-service" in r.gateway_api.condition(route, "ResolvedRefs").message


def test_tcproute_invalid_cross_namespace_backend_ref():
    """tcproute-invalid-cross-namespace-backend-ref.go: ResolvedRefs=False RefNotPermitted."""
    r = load("tcproute-invalid-cross-namespace-backend-ref")
    route = f"TCPRoute {INFRA}/tcp-invalid-cross-namespace-backend-ref"
    assert cond(r, route, "ResolvedRefs") == ("False", "RefNotPermitted")
    warning = next(d for d in r.warnings if d.resource == route)
    assert warning.path == "spec.rules[0].backendRefs[0]"
    assert warning.line == 85  # the backendRef in the manifest


def test_tcproute_invalid_non_tcp_listener():
    """tcproute-invalid-non-tcp-listener.go: Accepted=False NotAllowedByListeners."""
    r = load("tcproute-invalid-non-tcp-listener")
    assert cond(r, f"TCPRoute {INFRA}/tcp-route", "Accepted") == \
        ("False", "NotAllowedByListeners")
    assert r.table.listeners == ()


def test_tcproute_multiple_routes_attachment(tmp_path: Path):
    """tcproute-multiple-routes-attachment.go: both Accepted, AttachedRoutes 2, oldest routes."""
    newer = tmp_path / "newer.yaml"
    # The newer route the .go test creates after the manifest's older one.
    newer.write_text(f"""\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcproute-attach-newer, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: tcp-multi-route-attach-gateway, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: tcp-attach-backend-2, port: 3000}}]}}]
""")
    r = load("tcproute-multiple-routes-attachment", str(newer))
    for name in ("tcproute-attach-older", "tcproute-attach-newer"):
        assert cond(r, f"TCPRoute {INFRA}/{name}", "Accepted") == ("True", "Accepted")
    listener = r.gateway_api.listener(f"Gateway {INFRA}/tcp-multi-route-attach-gateway", "tcp")
    assert listener.attached_routes == 2
    assert listener.supported_kinds == ("TCPRoute",)
    (tl,) = r.table.listeners
    assert tl.port == 9310
    assert tl.tcp_route.name == f"{INFRA}/tcproute-attach-older#tcproute[0]"
    (dest,) = tl.tcp_route.destinations
    assert dest.cluster.host == f"tcp-attach-backend-1.{INFRA}.svc.cluster.local"


def test_tcproute_parentref_attach_all():
    """tcproute-parentref-attach-all.go: no sectionName/port attaches to every TCP listener."""
    r = load("tcproute-parentref-attach-all")
    assert cond(r, f"TCPRoute {INFRA}/tcp-route-attach-all", "Accepted") == ("True", "Accepted")
    assert sorted(li.port for li in r.table.listeners) == [9310, 9311, 9312, 9313]
    for li in r.table.listeners:
        assert li.tcp_route.name == f"{INFRA}/tcp-route-attach-all#tcproute[0]"


def test_tcproute_parentref_port_and_section_name():
    """tcproute-parentref-port-and-section-name.go: attach by port, sectionName or both."""
    r = load("tcproute-parentref-port-and-section-name")
    routes = {li.port: li.tcp_route.name.split("/")[1] for li in r.table.listeners}
    assert routes == {9300: "tcp-route-by-port#tcproute[0]",
                      9301: "tcp-route-by-section#tcproute[0]",
                      9302: "tcp-route-by-section-and-port#tcproute[0]"}
    for name in ("tcp-route-by-port", "tcp-route-by-section", "tcp-route-by-section-and-port"):
        assert cond(r, f"TCPRoute {INFRA}/{name}", "Accepted") == ("True", "Accepted")


def test_tcproute_reference_grant():
    """tcproute-reference-grant.go: the ReferenceGrant permits the cross-namespace backend."""
    r = load("tcproute-reference-grant")
    route = f"TCPRoute {INFRA}/tcp-reference-grant"
    assert cond(r, route, "ResolvedRefs") == ("True", "ResolvedRefs")
    (li,) = r.table.listeners
    (dest,) = li.tcp_route.destinations
    assert dest.cluster.host == \
        "tcp-reference-grant-backend.gateway-conformance-web-backend.svc.cluster.local"


def test_tcproute_weighted_routing():
    """tcproute-weighted-routing.go: weights 70/30, a weight-0 backend gets nothing."""
    r = load("tcproute-weighted-routing")
    (li,) = r.table.listeners
    weights = {wc.cluster.host.split(".")[0]: wc.weight for wc in li.tcp_route.destinations}
    assert weights == {"tcp-backend-v1": 70, "tcp-backend-v2": 30}


def test_tlsroute_hostname_intersection_status():
    """tlsroute-hostname-intersection.go: every route attaches (traffic: the e2e test)."""
    r = load("tlsroute-hostname-intersection")
    for route in r.gateway_api.routes:
        if route.ref.startswith("TLSRoute"):
            assert [c.reason for c in route.parents[0].conditions] == \
                ["Accepted", "ResolvedRefs"], route


def test_tlsroute_invalid_backendref_nonexistent():
    """tlsroute-invalid-backendref-nonexistent.go: Accepted, ResolvedRefs=False BackendNotFound."""
    r = load("tlsroute-invalid-backendref-nonexistent")
    route = f"TLSRoute {INFRA}/invalid-backend-ref-nonexistent"
    assert cond(r, route, "Accepted") == ("True", "Accepted")
    assert cond(r, route, "ResolvedRefs") == ("False", "BackendNotFound")


def test_tlsroute_invalid_backendref_unknown_kind():
    """tlsroute-invalid-backendref-unknown-kind.go: ResolvedRefs=False InvalidKind."""
    r = load("tlsroute-invalid-backendref-unknown-kind")
    route = f"TLSRoute {INFRA}/invalid-backend-ref-unknown-kind"
    assert cond(r, route, "Accepted") == ("True", "Accepted")
    assert cond(r, route, "ResolvedRefs") == ("False", "InvalidKind")


def test_tlsroute_invalid_no_matching_listener_hostname():
    """tlsroute-invalid-no-matching-listener-hostname.go: NoMatchingListenerHostname, 0 routes."""
    r = load("tlsroute-invalid-no-matching-listener-hostname")
    for name in ("tlsroute-hostname-mismatch-1", "tlsroute-hostname-mismatch-2"):
        assert cond(r, f"TLSRoute {INFRA}/{name}", "Accepted") == \
            ("False", "NoMatchingListenerHostname")
    for gw in ("gateway-tls-exact-hostname", "gateway-tls-wildcard-hostname"):
        assert r.gateway_api.listener(f"Gateway {INFRA}/{gw}", "tls").attached_routes == 0


def test_tlsroute_invalid_no_matching_listener():
    """tlsroute-invalid-no-matching-listener.go: NotAllowedByListeners / NoMatchingParent."""
    r = load("tlsroute-invalid-no-matching-listener")
    assert cond(r, f"TLSRoute {INFRA}/tlsroute-not-allowed-protocol-http", "Accepted") == \
        ("False", "NotAllowedByListeners")
    assert cond(r, f"TLSRoute {INFRA}/tlsroute-not-allowed-protocol-https", "Accepted") == \
        ("False", "NotAllowedByListeners")
    assert cond(r, f"TLSRoute {INFRA}/tlsroute-no-matching-section-name", "Accepted") == \
        ("False", "NoMatchingParent")


def test_tlsroute_invalid_reference_grant():
    """tlsroute-invalid-reference-grant.go: none of the 7 wrong grants permits: RefNotPermitted."""
    r = load("tlsroute-invalid-reference-grant")
    assert cond(r, f"TLSRoute {INFRA}/gateway-conformance-infra-test", "ResolvedRefs") == \
        ("False", "RefNotPermitted")


def test_tlsroute_listener_mixed_termination_not_supported():
    """tlsroute-listener-mixed-termination-not-supported.go: both listeners ProtocolConflict."""
    r = load("tlsroute-listener-mixed-termination-not-supported")
    gw = f"Gateway {INFRA}/gateway-tlsroute-mixed-termination-not-supported"
    for name in ("tls-terminate", "tls-passthrough"):
        li = r.gateway_api.listener(gw, name)
        accepted = li.conditions[0]
        assert (accepted.type, accepted.status, accepted.reason) == \
            ("Accepted", "False", "ProtocolConflict")
        assert li.attached_routes == 0
    assert any(w.path == "spec.listeners[1]" and "not served" in w.message for w in r.warnings)


def test_tlsroute_listener_passthrough_supported_kinds():
    """tlsroute-listener-passthrough-supported-kinds.go: TLSRoute only, InvalidRouteKinds."""
    r = load("tlsroute-listener-passthrough-supported-kinds")
    li = r.gateway_api.listener(f"Gateway {INFRA}/gateway-tlsroute-passthrough-supported-kind",
                                "tls-passthrough")
    assert li.supported_kinds == ("TLSRoute",)
    resolved = next(c for c in li.conditions if c.type == "ResolvedRefs")
    assert (resolved.status, resolved.reason) == ("False", "InvalidRouteKinds")


def test_tlsroute_listener_terminate_not_supported():
    """tlsroute-listener-terminate-not-supported.go: Accepted=False UnsupportedValue."""
    r = load("tlsroute-listener-terminate-not-supported")
    li = r.gateway_api.listener(f"Gateway {INFRA}/gateway-tlsroute-terminate-unsupported",
                                "tls-terminate")
    assert (li.conditions[0].status, li.conditions[0].reason) == ("False", "UnsupportedValue")
    assert li.supported_kinds == ("TLSRoute",)
    assert any("not served" in w.message and w.path == "spec.listeners[0].tls.mode"
               for w in r.warnings)


def test_tlsroute_simple_same_namespace_status():
    """tlsroute-simple-same-namespace.go: Gateway and route accepted, one SNI chain."""
    r = load("tlsroute-simple-same-namespace")
    assert cond(r, f"TLSRoute {INFRA}/gateway-conformance-infra-test", "Accepted") == \
        ("True", "Accepted")
    gw = f"Gateway {INFRA}/gateway-tlsroute"
    assert cond(r, gw, "Accepted") == ("True", "Accepted")
    assert cond(r, gw, "Programmed") == ("True", "Programmed")
    (li,) = r.table.listeners
    (chain,) = li.tls_chains
    assert chain.server_names == ("abc.example.com",)
