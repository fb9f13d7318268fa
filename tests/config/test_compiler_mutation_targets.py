"""
The compiler's rules that the mutation run of tsgate/config/compiler.py found
unguarded (docs/mutation-report.md, "compiler"): each test states Istio's
behaviour (shared ISTIO-L4.md) and checks the route table and diagnostics.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from tests.config import test_config_compiler as compiler_tests
from tests.support.tlscerts import CA

# the builders of tests/config/test_config_compiler.py (not yet strictly typed there)
SE_STATIC: str = compiler_tests.SE_STATIC
clusters: Callable[..., Any] = compiler_tests.clusters
gw: Callable[..., str] = compiler_tests.gw
ok: Callable[..., Any] = compiler_tests.ok
only_listener: Callable[..., Any] = compiler_tests.only_listener
tcp_vs: Callable[..., str] = compiler_tests.tcp_vs

TLS_GW = gw(port=443, protocol="TLS", tls=True)


def warnings_about(result: Any, text: Any) -> Any:
    return [w for w in result.warnings if text in w.message]


def notices_about(result: Any, text: Any) -> Any:
    return [n for n in result.notices if text in n.message]


def se_static(
        name: Any = "se", hosts: Any = "[db.example.com]", ns: Any = "default",
        extra: Any = "") -> Any:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: {hosts}
  ports: [{{number: 5432, name: pg, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 10.0.0.{len(name)}}}]
{extra}"""


def dr(name: Any, host: Any, timeout: Any, ns: Any = "default", extra: Any = "") -> Any:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec:
  host: "{host}"
  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: {timeout}}}}}}}
{extra}"""


def the_cluster(result: Any) -> Any:
    [wc] = only_listener(result).tcp_route.destinations
    return wc.cluster


# ------------------------------------------------------------ gateways


def test_legacy_gateway_reference_name_dot_namespace(load: Any) -> None:
    """``gw.edge.svc.cluster.local`` names Gateway ``edge/gw`` (Istio's old FQDN form)."""
    result = load(gw(ns="edge"), tcp_vs(ns="apps", gateways="gw.edge.svc.cluster.local"))
    assert only_listener(result).tcp_route.name == "apps/vs#tcp[0]"
    # and not apps/gw or edge/edge: the name is the first label, the namespace the second
    result = load(gw(ns="apps"), tcp_vs(ns="apps", gateways="gw.edge.svc.cluster.local"))
    assert result.table.listeners == ()


def test_udp_server_is_skipped_with_a_warning(load: Any) -> None:
    result = load(gw(protocol="UDP"), tcp_vs())
    assert result.table.listeners == ()
    [w] = warnings_about(result, "UDP server skipped")
    assert w.message == "UDP server skipped: tsgate proxies TCP only"
    assert (w.resource, w.path) == ("Gateway default/gw", "spec.servers[0]")
    assert w.code == ""  # tsgate's own finding: no istioctl analyze code


def test_tls_servers_with_a_shared_host_on_one_port_first_wins(load: Any) -> None:
    """Istio drops a server whose host duplicates one already on the port (case-insensitive)."""
    first = gw(name="a", port=443, protocol="TLS", tls=True, hosts="A.example.com")
    second = gw(name="b", port=443, protocol="TLS", tls=True,
                hosts="b.example.com, a.example.com", extra="""\
  - port: {number: 9443, name: after, protocol: TLS}
    hosts: [c.example.com]
    tls: {mode: PASSTHROUGH}
""")
    result = load(first, second, tls_route("a.example.com", gateways="a, b"),
                  tls_route("b.example.com, c.example.com", name="vb", gateways="a, b"))
    li, after = ok(result).table.listeners
    assert li.gateways == (("Gateway", "default", "a"),)
    assert [c.server_names for c in li.tls_chains] == [("a.example.com",),
                                                       ("b.example.com", "c.example.com")]
    assert after.port == 9443  # the server after the skipped one is served
    [w] = warnings_about(result, "skipping server: duplicate host names")
    assert (w.resource, w.path) == ("Gateway default/b", "spec.servers[0]")
    assert "Gateway default/a spec.servers[0] on port 443 (first wins)" in w.message


def test_tls_servers_with_other_hosts_on_one_port_both_serve(load: Any) -> None:
    first = gw(name="a", port=443, protocol="TLS", tls=True, hosts="a.example.com")
    second = gw(name="b", port=443, protocol="TLS", tls=True, hosts="b.example.com")
    result = load(first, second, tls_route("a.example.com", gateways="a"),
                  tls_route("b.example.com", name="vb", gateways="b"))
    li = only_listener(result)
    assert li.gateways == (("Gateway", "default", "a"), ("Gateway", "default", "b"))
    assert not warnings_about(result, "skipping server")


def tls_route(
        sni: Any, name: Any = "va", gateways: Any = "gw", host: Any = "backend", extra_match: Any =
        "") -> Any:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: ["*"]
  gateways: [{gateways}]
  tls:
  - match:
    - sniHosts: [{sni}]{extra_match}
    route:
    - destination: {{host: {host}, port: {{number: 443}}}}
"""


def test_tls_rules_on_a_tcp_server_are_ignored_with_a_warning(load: Any) -> None:
    result = load(gw(), tls_route("a.example.com"))
    assert result.table.listeners == ()
    [w] = warnings_about(result, "tls rules are ignored on the TCP server")
    assert (w.resource, w.path) == ("VirtualService default/va", "spec.tls")
    assert "Gateway default/gw spec.servers[0]" in w.message


def test_tls_rules_of_another_gateway_are_not_called_ignored(load: Any) -> None:
    """The warning is for rules that would apply here: a match naming another Gateway does not."""
    other = gw(name="other", port=443, protocol="TLS", tls=True)
    vs = tls_route("a.example.com", gateways="gw, other",
                   extra_match="\n      gateways: [other]")
    result = load(gw(), other, vs)
    assert not warnings_about(result, "tls rules are ignored")


def test_conflicting_annotations_on_one_listener_first_is_used(load: Any) -> None:
    def annotated(name: Any, value: Any) -> Any:
        return gw(name=name).replace(
            f"metadata: {{name: {name}, namespace: default}}",
            f"metadata:\n  name: {name}\n  annotations: {{tsgate.io/proxy-protocol: '{value}'}}")

    result = load(annotated("a", "required"), annotated("b", "optional"),
                  tcp_vs(gateways="a, b"))
    li = only_listener(result)
    assert li.annotations == (("tsgate.io/proxy-protocol", "required"),)
    # the second TCP server on the port is skipped, but its Gateway's annotation still counts
    # only through servers that compiled: here just "a"
    assert not warnings_about(result, "conflicts with")


def test_conflicting_annotations_of_tcp_and_tls_servers_on_one_port(load: Any) -> None:
    def annotated(text: Any, name: Any, value: Any) -> Any:
        return text.replace(
            f"metadata: {{name: {name}, namespace: default}}",
            f"metadata:\n  name: {name}\n  annotations: {{tsgate.io/proxy-protocol: '{value}'}}")

    tcp = annotated(gw(name="a", port=443), "a", "required")
    tls = annotated(gw(name="b", port=443, protocol="TLS", tls=True), "b", "optional")
    result = load(tcp, tls, tcp_vs(gateways="a"), tls_route("x.example.com", gateways="b"))
    li = only_listener(result)
    assert li.annotations == (("tsgate.io/proxy-protocol", "required"),)
    [w] = warnings_about(result, "conflicts with")
    assert w.resource == "Gateway default/b" and w.path == "metadata.annotations"
    assert w.message == ("annotation tsgate.io/proxy-protocol='optional' conflicts with "
                         "Gateway default/a ('required') on listener 0.0.0.0:443; "
                         "the first is used")


# --------------------------------------------------------- ServiceEntries


def test_wildcard_service_entry_names_the_hosts_under_it(load: Any) -> None:
    """Istio: ``*.example.com`` covers ``db.example.com``; the longest wildcard wins."""
    wide = se_static("wide", '["*.example.com"]')
    narrow = se_static("narrower", '["*.db.example.com"]')
    result = load(gw(), wide, narrow, tcp_vs(host="a.db.example.com", port=5432))
    c = the_cluster(result)
    assert (c.name, c.resolution) == ("outbound|5432||a.db.example.com", "STATIC")
    assert [e.address for e in c.endpoints] == ["10.0.0.8"]  # narrower's
    result = load(gw(), narrow, wide, tcp_vs(host="a.db.example.com", port=5432))
    assert [e.address for e in the_cluster(result).endpoints] == ["10.0.0.8"]
    result = load(gw(), narrow, wide, tcp_vs(host="x.example.com", port=5432))
    assert [e.address for e in the_cluster(result).endpoints] == ["10.0.0.4"]
    # the wildcard's own suffix is not under it
    result = load(gw(), wide, tcp_vs(host="example.com", port=5432))
    assert the_cluster(result).resolution == "HOSTNAME"


def test_exact_service_entry_host_beats_a_wildcard_listed_first(load: Any) -> None:
    wide = se_static("wide", '["*.example.com"]')
    exact = se_static("exact", "[db.example.com]")
    result = load(gw(), wide, exact, tcp_vs(host="db.example.com", port=5432))
    assert [e.address for e in the_cluster(result).endpoints] == ["10.0.0.5"]


def test_endpoints_without_a_tcp_address_are_skipped_with_a_warning(load: Any) -> None:
    se = se_static("echo").replace(
        "  endpoints: [{address: 10.0.0.4}]\n",
        "  endpoints:\n  - {address: 10.0.0.1}\n  - {network: far}\n"
        "  - {address: 'unix:///var/run/x.sock'}\n  - {address: 10.0.0.2}\n")
    result = load(gw(), se, tcp_vs(host="db.example.com", port=5432))
    assert [e.address for e in the_cluster(result).endpoints] == ["10.0.0.1", "10.0.0.2"]
    [w] = warnings_about(result, "endpoint without an address")
    assert w.message == ("endpoint without an address (network 'far') skipped: tsgate has "
                         "nothing to connect to")
    assert (w.resource, w.path) == ("ServiceEntry default/echo", "spec.endpoints")
    [w] = warnings_about(result, "unix endpoint unix:///var/run/x.sock skipped")
    assert w.message == "unix endpoint unix:///var/run/x.sock skipped: tsgate connects over TCP"
    assert w.path == "spec.endpoints"
    # said once for the ServiceEntry, however many of its ports are routed
    two_ports = se_static("echo").replace(
        "  endpoints: [{address: 10.0.0.4}]\n",
        "  endpoints:\n  - {address: 10.0.0.1}\n  - {network: far}\n").replace(
        "ports: [{number: 5432, name: pg, protocol: TCP}]",
        "ports: [{number: 1, name: a, protocol: TCP}, {number: 2, name: b, protocol: TCP}]")
    vs = weighted_vs("db.example.com", "db.example.com").replace(
        "{number: 1}}\n      weight: 40", "{number: 2}}\n      weight: 40")
    result = load(gw(), two_ports, vs)
    assert len(clusters(only_listener(result).tcp_route)) == 2
    assert len(warnings_about(result, "endpoint without an address")) == 1
    # and for two subsets of one port
    subsets = dr("echo", "db.example.com", "1s", extra="  subsets: [{name: v1}, {name: v2}]\n")
    vs = weighted_vs("db.example.com", "db.example.com").replace(
        "{number: 1}}\n      weight: 60", "{number: 5432}, subset: v1}\n      weight: 60").replace(
        "{number: 1}}\n      weight: 40", "{number: 5432}, subset: v2}\n      weight: 40")
    result = load(gw(), se, subsets, vs)
    assert len(clusters(only_listener(result).tcp_route)) == 2
    assert len(warnings_about(result, "unix endpoint")) == 1
    assert len(warnings_about(result, "endpoint without an address")) == 1


def test_subset_whose_labels_select_no_endpoint_warns_uh(load: Any) -> None:
    rule = dr("echo", "echo.example.com", "1s", extra="""\
  subsets:
  - name: v3
    labels: {version: v3}
""")
    vs = tcp_vs(host="echo.example.com").replace("port: {number: 2701}",
                                                 "port: {number: 2701}, subset: v3")
    result = load(gw(), SE_STATIC, rule, vs)
    assert the_cluster(result).endpoints == ()
    [w] = warnings_about(result, "has no endpoints")
    assert w.message == ("cluster outbound|2701|v3|echo.example.com has no endpoints with the "
                         "labels of subset 'v3': connections to it fail (UH)")


def test_resolution_none_or_dynamic_dns_is_an_error_and_the_route_is_left_out(load: Any) -> None:
    se = se_static("none").replace("resolution: STATIC", "resolution: NONE") \
        .replace("  endpoints: [{address: 10.0.0.4}]\n", "")
    result = load(gw(), se, tcp_vs(host="db.example.com", port=5432))
    assert not result.ok
    [e] = [e for e in result.errors if "has resolution" in e.message]
    assert e.message == ("ServiceEntry default/none has resolution NONE, which forwards to the "
                         "connection's original destination address, which an ingress gateway "
                         "does not have; use STATIC endpoints or DNS")
    assert (e.resource, e.path) == ("VirtualService default/vs",
                                    "spec.tcp[0].route[0].destination.host")
    dynamic = se.replace("resolution: NONE", "resolution: DYNAMIC_DNS").replace(
        "[db.example.com]", '["*.example.com"]').replace("protocol: TCP", "protocol: TLS")
    result = load(gw(), dynamic, tcp_vs(host="db.example.com", port=5432))
    [e] = [e for e in result.errors if "has resolution" in e.message]
    assert e.message == ("ServiceEntry default/none has resolution DYNAMIC_DNS, which resolves "
                         "the HTTP Host or SNI per request, not usable for TCP; use STATIC "
                         "endpoints or DNS")


# -------------------------------------------------------- DestinationRules


def test_wildcard_destination_rule_longest_wins_exact_first(load: Any) -> None:
    """Istio picks the DestinationRule of the most specific host: exact, then longest wildcard."""
    wide = dr("wide", "*.example.com", "1s")
    narrow = dr("narrow", "*.db.example.com", "2s")
    exact = dr("exact", "a.db.example.com", "3s")
    ses = [se_static("s", '["*.example.com"]')]
    for order in ([wide, narrow], [narrow, wide]):
        result = load(gw(), *ses, *order, tcp_vs(host="a.db.example.com", port=5432))
        assert the_cluster(result).connect_timeout == 2.0
    result = load(gw(), *ses, wide, narrow, exact, tcp_vs(host="a.db.example.com", port=5432))
    assert the_cluster(result).connect_timeout == 3.0
    result = load(gw(), *ses, wide, narrow, tcp_vs(host="x.example.com", port=5432))
    assert the_cluster(result).connect_timeout == 1.0


def test_a_second_destination_rule_for_one_host_is_not_used(load: Any) -> None:
    result = load(gw(), dr("one", "echo", "2s"), dr("two", "echo", "3s"), tcp_vs())
    assert the_cluster(result).connect_timeout == 2.0
    [w] = warnings_about(result, "another DestinationRule for host")
    assert w.resource == "DestinationRule default/two" and w.path == "spec.host"
    assert "echo.default.svc.cluster.local comes first (DestinationRule default/one)" in w.message


def test_destination_rule_not_exported_to_the_route_is_not_applied(load: Any) -> None:
    hidden = dr("hidden", "echo.default.svc.cluster.local", "2s", ns="other",
                extra="  exportTo: [.]\n")
    assert the_cluster(load(gw(), hidden, tcp_vs())).connect_timeout == 10.0
    shown = hidden.replace("exportTo: [.]", "exportTo: [default]")
    assert the_cluster(load(gw(), shown, tcp_vs())).connect_timeout == 2.0
    # a hidden rule listed first does not hide the next one
    own = dr("own", "echo", "4s", extra="  exportTo: [.]\n")  # private to default: seen there
    assert the_cluster(load(gw(), hidden, own, tcp_vs())).connect_timeout == 4.0


def test_weighted_destinations_share_one_cluster_per_name(load: Any) -> None:
    """Two routes to one host:port share the cluster (Istio: one cluster per name)."""
    vs2 = tcp_vs(name="vs2", gateways="g2")
    result = load(gw(), gw(name="g2", port=9000), tcp_vs(), vs2)
    a, b = ok(result).table.listeners
    assert a.tcp_route.destinations[0].cluster is b.tcp_route.destinations[0].cluster
    assert clusters(a.tcp_route) == [("outbound|2701||echo.default.svc.cluster.local", 100)]


# ------------------------------------------------------- AUTO_PASSTHROUGH

AUTO_GW = gw(port=15443, protocol="TLS", hosts='"*.local"').replace(
    "    hosts:", "    tls: {mode: AUTO_PASSTHROUGH}\n    hosts:")
INTERNAL_SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 2701, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
"""


def test_auto_passthrough_server_routes_cluster_names_on_its_port(load: Any) -> None:
    """Istio: one chain per registry service, port and subset, SNI = the cluster's name."""
    subsets = dr("echo", "echo", "1s", extra="  subsets: [{name: v1}]\n")
    result = load(AUTO_GW, INTERNAL_SE, subsets)
    li = only_listener(result)
    assert (li.port, li.protocols, li.port_names) == (15443, ("TLS",), ("p15443-tls",))
    assert [c.server_names for c in li.tls_chains] == [
        ("outbound_.2701_._.echo.default.svc.cluster.local",),
        ("outbound_.2701_.v1_.echo.default.svc.cluster.local",)]
    assert [c.route.destinations[0].cluster.name for c in li.tls_chains] == [
        "outbound|2701||echo.default.svc.cluster.local",
        "outbound|2701|v1|echo.default.svc.cluster.local"]


def test_auto_passthrough_next_to_a_passthrough_server_keeps_the_routed_sni(load: Any) -> None:
    """A name a PASSTHROUGH server's VirtualService routes is not taken again."""
    name = "outbound_.2701_._.echo.default.svc.cluster.local"
    passthrough = gw(name="pt", port=15443, protocol="TLS", tls=True, hosts='"*.local"')
    result = load(passthrough, AUTO_GW, INTERNAL_SE,
                  tls_route(name, gateways="pt", host="elsewhere"))
    li = only_listener(result)
    assert [(c.server_names, c.route.name) for c in li.tls_chains] == [
        ((name,), "default/va#tls[0]")]
    assert li.gateways == (("Gateway", "default", "pt"), ("Gateway", "default", "gw"))


# ------------------------------------------------------------ diagnostics


def test_not_exported_is_said_once_per_virtual_service_and_gateway(load: Any) -> None:
    two_ports = gw(ns="edge", extra="""\
  - port: {number: 9000, name: other, protocol: TCP}
    hosts: ["*"]
""")
    private = tcp_vs(ns="apps", gateways="edge/gw", extra="  exportTo: [.]\n")
    result = load(two_ports, private)
    [n] = notices_about(result, "not exported")
    assert n.message == ("not exported to namespace edge of the gateway: not bound to "
                         "Gateway edge/gw")
    assert (n.resource, n.path) == ("VirtualService apps/vs", "spec.exportTo")


def test_selector_messages_name_the_labels(load: Any) -> None:
    other = gw(name="other").replace("{istio: ingressgateway}", "{app: edge, tier: front}")
    result = load(other, gw(), tcp_vs(), gateway_labels={"istio": "ingressgateway", "x": "y"})
    [n] = notices_about(result, "not for this gateway")
    assert n.message == ("not for this gateway: selector app=edge, tier=front does not match "
                         "the gateway labels istio=ingressgateway, x=y; ignored")
    assert (n.resource, n.path) == ("Gateway default/other", "spec.selector")
    result = load(other, gw(name="third"), tcp_vs(gateways="third"), gateway_labels={})
    [w] = warnings_about(result, "no Gateway selects")
    assert w.message == ("no Gateway selects this gateway's labels (none) "
                         "(set them with --gateway-label)")
    assert w.path == "spec.selector"
    assert w.resource == "Gateway default/other"


def test_a_selector_must_match_every_label(load: Any) -> None:
    """Istio: a Gateway applies when all of its selector's labels are the workload's."""
    two = gw().replace("{istio: ingressgateway}", "{istio: ingressgateway, zone: a}")
    assert load(two, tcp_vs()).table.listeners == ()
    assert load(two, tcp_vs(), gateway_labels={"istio": "ingressgateway", "zone": "a",
                                               "more": "x"}).table.listeners
    assert load(two, tcp_vs(), gateway_labels={"istio": "ingressgateway",
                                               "zone": "b"}).table.listeners == ()


def test_match_on_a_port_no_server_has_is_a_warning_naming_the_gateway(load: Any) -> None:
    vs = tcp_vs().replace("  - route:", "  - match: [{port: 31400}, {port: 1234}]\n    route:")
    result = load(gw(), vs)
    assert only_listener(result).tcp_route.name == "default/vs#tcp[0]"
    [w] = warnings_about(result, "listens on port")
    assert w.message == ("no server of gateway default/gw listens on port 1234: this match "
                         "never applies")
    assert w.path == "spec.tcp[0].match[1].port"


def test_no_listeners_warning_names_the_labels(load: Any) -> None:
    result = load(gw(), tcp_vs(gateways="elsewhere"))
    [w] = warnings_about(result, "no listeners")
    assert w.message == ("no listeners: no server of a Gateway selecting this gateway "
                         "(istio=ingressgateway) has a route, so tsgate would accept no "
                         "connections")
    # a Gateway alone (nothing to route yet) is not warned about
    assert not warnings_about(load(gw()), "no listeners")


# ------------------------------------------------------- host binding


def test_server_host_dot_prefix_means_the_gateways_namespace(load: Any) -> None:
    """Istio: ``./host`` admits VirtualServices of the Gateway's own namespace only."""
    g = gw(ns="edge", hosts='"./*"')
    assert load(g, tcp_vs(ns="edge", gateways="gw")).table.listeners
    result = load(g, tcp_vs(ns="apps", gateways="edge/gw"))
    assert result.table.listeners == ()
    assert warnings_about(result, "bound to no server")
    g = gw(ns="edge", hosts='"*/*"')
    assert load(g, tcp_vs(ns="apps", gateways="edge/gw")).table.listeners


def test_virtual_service_hosts_must_overlap_a_server_host(load: Any) -> None:
    g = gw(hosts='"*.example.com"')
    assert load(g, tcp_vs(hosts="a.example.com")).table.listeners
    assert load(g, tcp_vs(hosts='"*.a.example.com"')).table.listeners
    result = load(g, tcp_vs(hosts="a.example.org"))
    assert result.table.listeners == ()
    # a short VirtualService host is its namespace's service name, matched in full
    g = gw(hosts="echo.default.svc.cluster.local")
    assert load(g, tcp_vs(hosts="echo")).table.listeners
    assert load(g, tcp_vs(hosts="echo", ns="apps", gateways="default/gw")).table.listeners == ()


# ------------------------------------------------- clusters that do not exist


def test_a_missing_cluster_is_warned_once_and_shared_by_the_listeners(load: Any) -> None:
    """One route serving two ports: one IST0101 warning, one cluster named like istiod's."""
    two_ports = gw(extra="""\
  - port: {number: 9000, name: other, protocol: TCP}
    hosts: ["*"]
""")
    vs = tcp_vs(host="echo.example.com").replace("port: {number: 2701}",
                                                 "port: {number: 2701}, subset: v9")
    result = load(two_ports, SE_STATIC, vs)
    a, b = ok(result).table.listeners
    ca, cb = a.tcp_route.destinations[0].cluster, b.tcp_route.destinations[0].cluster
    assert ca is cb
    assert (ca.name, ca.host, ca.port, ca.subset, ca.missing, ca.endpoints) == (
        "outbound|2701|v9|echo.example.com", "echo.example.com", 2701, "v9", True, ())
    [w] = [d for d in result.diagnostics if d.code == "IST0101"]
    assert w.message == (
        'Referenced host+subset in destinationrule not found: "echo.example.com+v9" (no '
        "DestinationRule for host echo.example.com); the route is served, but cluster "
        "outbound|2701|v9|echo.example.com does not exist: a connection routed to it is "
        "closed at once (NC), as Envoy does")
    assert w.path == "spec.tcp[0].route[0].destination.subset"


# ------------------------------------------------- TLS terminated by tsgate


@pytest.fixture(scope="module")
def leaf_files(tmp_path_factory: Any) -> Any:
    """A certificate for a.example.test and *.w.example.test, and its key."""
    where = tmp_path_factory.mktemp("leaf")
    leaf = CA.create().issue("a.example.test", dns=["a.example.test", "*.w.example.test"])
    return leaf.write(where / "crt.pem", where / "key.pem")


def term_gw(
        files: Any, hosts: Any, name: Any = "gw", protocol: Any = "TLS",
        mode: Any = "SIMPLE") -> Any:
    crt, key = files
    return gw(name=name, port=443, protocol=protocol, hosts=hosts, extra=(
        f"    tls: {{mode: {mode}, serverCertificate: {crt}, privateKey: {key}}}\n"))


def test_terminated_server_names_drop_namespace_prefix_and_trailing_dot(
        load: Any, leaf_files: Any) -> None:
    result = load(term_gw(leaf_files, '"*/A.Example.Test.", "./x.w.example.test"'),
                  tcp_vs(hosts='"*"'))
    [chain] = only_listener(result).tls_chains
    assert chain.server_names == ("a.example.test", "x.w.example.test")
    assert chain.termination is not None


def test_terminated_server_warnings_point_at_its_tls(load: Any, leaf_files: Any) -> None:
    result = load(term_gw(leaf_files, "a.example.test, b.example.test"), tcp_vs())
    [w] = warnings_about(result, "does not cover host 'b.example.test'")
    assert (w.resource, w.path) == ("Gateway default/gw", "spec.servers[0].tls")


def test_terminated_server_takes_the_first_virtual_service_with_a_tcp_route(
        load: Any, leaf_files: Any) -> None:
    only_tls = tls_route("a.example.test", name="first", gateways="gw")
    elsewhere = tcp_vs(name="second").replace("  - route:", "  - match: [{port: 1}]\n    route:")
    result = load(term_gw(leaf_files, "a.example.test"), only_tls, elsewhere,
                  tcp_vs(name="third", host="backend").replace(", port: {number: 2701}", ""))
    [chain] = only_listener(result).tls_chains
    assert chain.route.name == "default/third#tcp[0]"
    # no port on the destination: the server's port, as for a TCP server
    assert chain.route.destinations[0].cluster.name == \
        "outbound|443||backend.default.svc.cluster.local"


def test_terminated_server_without_a_tcp_route_is_skipped_with_a_warning(
        load: Any, leaf_files: Any) -> None:
    result = load(term_gw(leaf_files, "a.example.test"), tls_route("a.example.test"))
    assert result.table.listeners == ()
    [w] = warnings_about(result, "no VirtualService has a tcp route")
    assert w.message == ("no VirtualService has a tcp route for this SIMPLE TLS server "
                         "(port 443): connections to it are closed")
    assert (w.resource, w.path) == ("Gateway default/gw", "spec.servers[0]")
    result = load(term_gw(leaf_files, "a.example.test", protocol="HTTPS"),
                  tls_route("a.example.test"))
    [w] = warnings_about(result, "HTTPS server skipped")
    assert w.message == ("HTTPS server skipped: no VirtualService routes it with tcp (tsgate "
                         "terminates TLS for tcp routes; HTTP routing is not served)")
    assert (w.resource, w.path) == ("Gateway default/gw", "spec.servers[0]")


def test_terminated_host_already_routed_by_passthrough_is_skipped(
        load: Any, leaf_files: Any) -> None:
    """One SNI, one chain: the passthrough route came first, the terminating server is skipped."""
    passthrough = gw(name="pt", port=443, protocol="TLS", tls=True, hosts='"*.example.test"')
    result = load(passthrough, term_gw(leaf_files, "a.example.test"),
                  tls_route("a.example.test", gateways="pt"), tcp_vs(gateways="gw"))
    li = only_listener(result)
    assert [(c.server_names, c.termination) for c in li.tls_chains] == [
        (("a.example.test",), None)]
    [w] = warnings_about(result, "duplicate SNI 'a.example.test'")
    assert (w.resource, w.path) == ("Gateway default/gw", "spec.servers[0].hosts")
    assert w.message == ("duplicate SNI 'a.example.test' on port 443: already routed by "
                         "default/va#tls[0]; this server is skipped (first wins)")


def test_certificate_covering_a_passthrough_host_is_a_warning(load: Any, leaf_files: Any) -> None:
    """HTTP/2 coalescing: a client may send the passthrough host's requests to the other."""
    passthrough = gw(name="pt", port=443, protocol="TLS", tls=True, hosts='"*.w.example.test"')
    result = load(passthrough, term_gw(leaf_files, "a.example.test"),
                  tls_route("b.w.example.test, c.w.example.test", gateways="pt"),
                  tcp_vs(gateways="gw"))
    li = only_listener(result)
    assert [c.server_names for c in li.tls_chains] == [("b.w.example.test", "c.w.example.test"),
                                                       ("a.example.test",)]
    [w] = warnings_about(result, "also covers the passthrough host")
    assert (w.resource, w.path) == ("Gateway default/gw", "spec.servers[0].tls")
    assert w.message == (
        "this server's certificate also covers the passthrough host(s) b.w.example.test, "
        "c.w.example.test on "
        "port 443: a client may reuse one connection for the other (HTTP/2 connection "
        "coalescing), reaching the wrong backend")
    passthrough = passthrough.replace('"*.w.example.test"', '"*.example.test"')
    result = load(passthrough, term_gw(leaf_files, "a.example.test"),
                  tls_route("c.x.example.test", gateways="pt"), tcp_vs(gateways="gw"))
    assert [c.server_names for c in only_listener(result).tls_chains] == [
        ("c.x.example.test",), ("a.example.test",)]
    assert not warnings_about(result, "also covers")  # *.w.example.test does not cover it


def test_unreadable_certificate_in_validate_mode_says_what_the_gateway_would_do(load: Any) -> None:
    result = load(term_gw(("/nonexistent.crt", "/nonexistent.key"), "a.example.test"),
                  tcp_vs(), tls_files_fatal=False)
    assert result.ok
    [w] = warnings_about(result, "cannot read certificate /nonexistent.crt")
    assert w.message.endswith(" (Istio admits the YAML; tsgate would not serve this, and the "
                              "gateway refuses to start with it)")
    assert w.path == "spec.servers[0].tls.serverCertificate"
    result = load(term_gw(("/nonexistent.crt", "/nonexistent.key"), "a.example.test"),
                  tcp_vs())
    [e] = [e for e in result.errors if "cannot read certificate" in e.message]
    assert "Istio admits" not in e.message


# ----------------------------------------------- TLS originated by tsgate


def origination_dr(policy_yaml: Any) -> Any:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: echo
{policy_yaml}"""


BAD_TLS = "{mode: SIMPLE, caCertificates: /nonexistent-ca.pem}"


@pytest.mark.parametrize("policy,subset,path", [
    (f"  trafficPolicy: {{tls: {BAD_TLS}}}\n", "", "spec.trafficPolicy.tls"),
    (f"""\
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 1}}
      tls: {{mode: SIMPLE}}
    - port: {{number: 2701}}
      tls: {BAD_TLS}
""", "", "spec.trafficPolicy.portLevelSettings[1].tls"),
    (f"""\
  subsets:
  - name: v1
    trafficPolicy: {{tls: {{mode: SIMPLE}}}}
  - name: v2
    trafficPolicy: {{tls: {BAD_TLS}}}
""", "v2", "spec.subsets[1].trafficPolicy.tls"),
    (f"""\
  trafficPolicy: {{tls: {{mode: SIMPLE}}}}
  subsets:
  - name: v2
    trafficPolicy:
      portLevelSettings:
      - port: {{number: 2701}}
        tls: {BAD_TLS}
""", "v2", "spec.subsets[0].trafficPolicy.portLevelSettings[0].tls"),
    (f"""\
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 2701}}
      tls: {BAD_TLS}
  subsets:
  - name: v2
""", "v2", "spec.trafficPolicy.portLevelSettings[0].tls"),
    (f"""\
  trafficPolicy: {{tls: {BAD_TLS}}}
  subsets:
  - name: v2
    trafficPolicy:
      portLevelSettings:
      - port: {{number: 2701}}
        connectionPool: {{tcp: {{connectTimeout: 1s}}}}
""", "v2", "spec.trafficPolicy.tls"),
])
def test_origination_errors_name_where_the_tls_settings_are(
        load: Any, policy: Any, subset: Any, path: Any) -> None:
    vs = tcp_vs()
    if subset:
        vs = vs.replace("port: {number: 2701}", f"port: {{number: 2701}}, subset: {subset}")
    result = load(gw(), origination_dr(policy), vs)
    assert [e.path for e in result.errors if "nonexistent-ca" in e.message] == [
        f"{path}.caCertificates"]


# ------------------------------------------------------ routes and clusters


def idle_dr(host: Any, idle: Any) -> Any:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}}}
spec:
  host: {host}
  trafficPolicy: {{connectionPool: {{tcp: {{idleTimeout: {idle}, maxConnectionDuration: {idle}}}}}}}
"""


def weighted_vs(first: Any, second: Any) -> Any:
    return tcp_vs().replace("""  - route:
    - destination: {host: echo, port: {number: 2701}}
""", f"""  - route:
    - destination: {{host: {first}, port: {{number: 1}}}}
      weight: 60
    - destination: {{host: {second}, port: {{number: 1}}}}
      weight: 40
""")


def test_weighted_route_takes_idle_timeout_from_the_first_destination(load: Any) -> None:
    """ISTIO-L4.md: idleTimeout is the listener's, so the first destination's value wins."""
    rules = (idle_dr("a", "5s"), idle_dr("b", "7s"))
    route = only_listener(load(gw(), *rules, weighted_vs("a", "b"))).tcp_route
    assert (route.idle_timeout, route.max_connection_duration) == (5.0, 5.0)
    route = only_listener(load(gw(), *rules, weighted_vs("b", "a"))).tcp_route
    assert (route.idle_timeout, route.max_connection_duration) == (7.0, 7.0)
    route = only_listener(load(gw(), rules[1], weighted_vs("a", "b"))).tcp_route
    assert (route.idle_timeout, route.max_connection_duration) == (3600.0, None)
    assert clusters(route) == [("outbound|1||a.default.svc.cluster.local", 60),
                               ("outbound|1||b.default.svc.cluster.local", 40)]


def test_service_entries_are_seen_from_the_gateway_namespace(load: Any) -> None:
    """--gateway-namespace: what the gateway proxy sees, not the VirtualService's namespace."""
    private = se_static("echo", ns="apps", extra="  exportTo: [.]\n")
    vs = tcp_vs(ns="apps", host="db.example.com", port=5432)
    assert the_cluster(load(gw(), private, vs.replace("gateways: [gw]",
                                                      "gateways: [default/gw]"))).resolution \
        == "STATIC"
    result = load(gw(), private, vs.replace("gateways: [gw]", "gateways: [default/gw]"),
                  gateway_namespace="default")
    assert the_cluster(result).resolution == "HOSTNAME"


def test_destination_without_service_entry_is_said_how_it_is_reached(load: Any) -> None:
    result = load(gw(), tcp_vs(host="db.example.com", port=5432))
    [n] = notices_about(result, "no ServiceEntry names host")
    assert n.message == ("no ServiceEntry names host db.example.com: connecting to "
                         "'db.example.com' port 5432 resolved by DNS as written")
    assert (n.resource, n.path) == ("VirtualService default/vs",
                                    "spec.tcp[0].route[0].destination.host")
    # Istio refuses an IP address here (an error); the notice still says what it would be
    result = load(gw(), tcp_vs(host="10.1.2.3", port=5432))
    [n] = notices_about(result, "no ServiceEntry names host")
    assert n.message.endswith("connecting to '10.1.2.3' port 5432 as written (an IP address)")


def test_endpoints_carry_their_labels_and_weights(load: Any) -> None:
    li = only_listener(load(gw(), SE_STATIC, tcp_vs(host="echo.example.com")))
    assert [(e.address, dict(e.labels), e.weight)
            for e in li.tcp_route.destinations[0].cluster.endpoints] == [
        ("10.0.0.1", {"version": "v1"}, 1), ("10.0.0.2", {"version": "v2"}, 3)]


# ---------------------------------------------------- servers on one port


def test_tcp_and_tls_servers_on_one_port_notes_name_the_order(load: Any) -> None:
    tcp = gw(name="t", port=443)
    tls_a = gw(name="a", port=443, protocol="TLS", tls=True, hosts="a.example.com")
    tls_b = gw(name="b", port=443, protocol="TLS", tls=True, hosts="b.example.com")
    routes = (tcp_vs(gateways="t"), tls_route("a.example.com", gateways="a"),
              tls_route("b.example.com", name="vb", gateways="b"))
    result = load(tcp, tls_a, tls_b, *routes)
    [n] = notices_about(result, "istio#27481")  # the first TLS server after the TCP one only
    assert n.message == ("TLS server on port 443 after the TCP server Gateway default/t "
                         "spec.servers[0]: tsgate serves both (TLS chains by SNI, TCP as the "
                         "fallback); Istio would skip this server (istio#27481)")
    assert (n.resource, n.path) == ("Gateway default/a", "spec.servers[0]")
    li = only_listener(result)
    assert li.servers == (("TCP", "p443-tcp"), ("TLS", "p443-tls"))
    assert li.protocols == ("TCP", "TLS") and li.port_names == ("p443-tcp", "p443-tls")
    result = load(tls_a, tls_b, tcp, *routes)
    [n] = notices_about(result, "after TLS servers")
    assert n.message == ("TCP server on port 443 after TLS servers: it takes connections that "
                         "match no SNI chain")
    assert (n.resource, n.path) == ("Gateway default/t", "spec.servers[0]")
    assert not notices_about(result, "istio#27481")
    assert only_listener(result).servers == (("TLS", "p443-tls"), ("TCP", "p443-tcp"))


def test_one_tls_rule_over_two_servers_of_a_port_is_one_chain(load: Any) -> None:
    """The rule's names are routed once; the second server is not left without a route."""
    two = gw(port=443, protocol="TLS", tls=True, hosts="a.example.com", extra="""\
  - port: {number: 443, name: second, protocol: TLS}
    hosts: [b.example.com]
    tls: {mode: PASSTHROUGH}
""")
    result = load(two, tls_route("a.example.com, B.example.com."))
    li = only_listener(result)
    assert [c.server_names for c in li.tls_chains] == [("a.example.com", "b.example.com")]
    assert li.port_names == ("p443-tls", "second")
    assert not warnings_about(result, "duplicate SNI")
    assert not warnings_about(result, "no VirtualService has a tls route")


def test_tls_server_without_a_route_names_its_hosts(load: Any) -> None:
    result = load(gw(port=443, protocol="TLS", tls=True, hosts="a.example.com, b.example.com"),
                  tls_route("a.example.com", extra_match="\n      port: 8443"))
    assert result.table.listeners == ()
    [w] = warnings_about(result, "no VirtualService has a tls route")
    assert w.message == ("no VirtualService has a tls route for this TLS server (port 443, "
                         "hosts a.example.com, b.example.com)")
    assert (w.resource, w.path) == ("Gateway default/gw", "spec.servers[0]")


def test_tcp_rules_on_a_tls_server_warning_names_the_server(load: Any) -> None:
    result = load(gw(port=443, protocol="TLS", tls=True), tcp_vs())
    [w] = warnings_about(result, "tcp rules are ignored")
    assert w.message == ("tcp rules are ignored on the TLS PASSTHROUGH server Gateway "
                         "default/gw spec.servers[0]; use tls rules with sniHosts (istio#40511)")
    assert (w.resource, w.path) == ("VirtualService default/vs", "spec.tcp")


def test_match_gateways_narrow_the_virtual_services_gateways(load: Any) -> None:
    """Istio: a match's own gateways replace the VirtualService's for that match."""
    vs = tcp_vs(gateways="a, b").replace("  - route:",
                                         "  - match: [{gateways: [b]}]\n    route:")
    result = load(gw(name="a"), gw(name="b", port=9000), vs)
    [li] = ok(result).table.listeners
    assert li.port == 9000


def test_http_and_istio_mutual_servers_are_skipped_with_warnings(load: Any) -> None:
    result = load(gw(protocol="HTTP", port=80), tcp_vs())
    [w] = warnings_about(result, "server skipped")
    assert w.message == ("HTTP server skipped: tsgate is a layer-4 gateway and serves TCP and "
                         "TLS passthrough servers only")
    assert w.path == "spec.servers[0]"
    mutual = gw(port=443, protocol="TLS").replace("    hosts:", "    tls: {mode: ISTIO_MUTUAL}\n"
                                                  "    hosts:")
    result = load(mutual, tcp_vs())
    [w] = warnings_about(result, "ISTIO_MUTUAL")
    assert w.message == ("ISTIO_MUTUAL needs Istio's mesh certificates, which tsgate does not "
                         "have: server skipped")
    assert w.path == "spec.servers[0].tls.mode"


# ------------------------------------------------------------- tcp routes


def test_first_matching_tcp_rule_of_a_virtual_service_is_the_route(load: Any) -> None:
    """Istio: tcp rules are tried in order; a rule whose match fails does not end the search."""
    vs = tcp_vs().replace("""  - route:
    - destination: {host: echo, port: {number: 2701}}
""", """  - match: [{port: 1234}]
    route:
    - destination: {host: one, port: {number: 1}}
  - route:
    - destination: {host: two, port: {number: 2}}
""")
    route = only_listener(load(gw(), vs)).tcp_route
    assert route.name == "default/vs#tcp[1]"
    assert clusters(route) == [("outbound|2||two.default.svc.cluster.local", 100)]


def test_second_virtual_service_for_a_tcp_port_is_warned_where_its_rule_is(load: Any) -> None:
    result = load(gw(), tcp_vs(host="one"), tcp_vs(name="late", host="two"))
    [w] = warnings_about(result, "already routed by")
    assert (w.resource, w.path) == ("VirtualService default/late", "spec.tcp[0]")
    assert w.message == ("ignored: port 31400 is already routed by VirtualService default/vs "
                         "spec.tcp[0] (a TCP port has one route; the first bound "
                         "VirtualService wins)")


def test_tcp_server_without_a_route_is_warned_on_the_server(load: Any) -> None:
    vs = tcp_vs().replace("  - route:", "  - match: [{port: 1234}]\n    route:")
    result = load(gw(), vs)
    [w] = warnings_about(result, "no VirtualService has a tcp route")
    assert (w.resource, w.path) == ("Gateway default/gw", "spec.servers[0]")
    assert w.message == ("no VirtualService has a tcp route for this server (port 31400): "
                         "plain TCP connections to it are closed")


def test_sni_of_a_terminated_server_is_not_routed_again_by_passthrough(
        load: Any, leaf_files: Any) -> None:
    """The terminating server came first: the passthrough match on its name is skipped."""
    passthrough = gw(name="pt", port=443, protocol="TLS", tls=True, hosts='"*.example.test"')
    result = load(term_gw(leaf_files, "a.example.test"), passthrough,
                  tls_route("a.example.test", gateways="pt"), tcp_vs(gateways="gw"))
    [chain] = only_listener(result).tls_chains
    assert chain.termination is not None
    [w] = warnings_about(result, "duplicate SNI 'a.example.test'")
    assert w.message == ("duplicate SNI 'a.example.test' on port 443: already routed by "
                         "Gateway default/gw spec.servers[0] (SIMPLE); this match is skipped "
                         "(first wins)")


def test_terminated_server_for_every_host_is_the_catch_all_chain(
        load: Any, leaf_files: Any) -> None:
    [chain] = only_listener(load(term_gw(leaf_files, '"*"'), tcp_vs())).tls_chains
    assert chain.server_names == ()
    assert chain.termination is not None


# ----------------------------------------------- subset policies merged


MERGE_DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo.example.com
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 2048}}}
    connectionPool: {tcp: {connectTimeout: 2s, maxConnections: 9}}
    proxyProtocol: {version: V1}
    outlierDetection: {consecutive5xxErrors: 3}
    tls: {mode: SIMPLE, sni: base.test}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {tcp: {connectTimeout: 1s}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
      proxyProtocol: {version: V2}
      outlierDetection: {consecutive5xxErrors: 5}
      tls: {mode: SIMPLE, sni: own.test}
"""


def test_subset_policy_overrides_field_by_field(load: Any) -> None:
    """Istio merges a subset's trafficPolicy over the rule's, one top-level field at a time."""
    def subset_cluster(name: Any) -> Any:
        vs = tcp_vs(host="echo.example.com").replace("port: {number: 2701}",
                                                     f"port: {{number: 2701}}, subset: {name}")
        return the_cluster(load(gw(), SE_STATIC, MERGE_DR, vs))

    v1 = subset_cluster("v1")  # connectionPool only: the rest is the rule's
    assert (v1.name, v1.subset) == ("outbound|2701|v1|echo.example.com", "v1")
    assert (v1.connect_timeout, v1.max_connections) == (1.0, None)
    assert (v1.lb_policy, v1.policy.ring_size, v1.policy.hash_source_ip) == (
        "RING_HASH", 2048, True)
    assert (v1.policy.proxy_protocol, v1.policy.outlier.threshold) == ("V1", 3)
    assert v1.tls.sni == "base.test"
    v2 = subset_cluster("v2")  # everything but connectionPool: the subset's
    assert (v2.connect_timeout, v2.max_connections) == (2.0, 9)
    assert (v2.lb_policy, v2.policy.hash_source_ip) == ("RANDOM", False)
    assert (v2.policy.proxy_protocol, v2.policy.outlier.threshold) == ("V2", 5)
    assert v2.tls.sni == "own.test"
    # a loadBalancer without simple or consistentHash still replaces the rule's whole field
    v3 = MERGE_DR + """\
  - name: v3
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {localityLbSetting: {enabled: false}}
"""
    vs = tcp_vs(host="echo.example.com").replace("port: {number: 2701}",
                                                 "port: {number: 2701}, subset: v3")
    c = the_cluster(load(gw(), SE_STATIC, v3, vs))
    assert (c.lb_policy, c.policy.hash_source_ip) == ("LEAST_REQUEST", False)
    v4 = v3.replace("loadBalancer: {localityLbSetting: {enabled: false}}",
                    "loadBalancer: {consistentHash: {useSourceIp: true, "
                    "ringHash: {minimumRingSize: 64}}}")
    c = the_cluster(load(gw(), SE_STATIC, v4, vs))
    assert (c.lb_policy, c.policy.ring_size) == ("RING_HASH", 64)


def test_virtual_service_for_the_mesh_only_is_noted_and_ignored(load: Any) -> None:
    for gateways in ("", "mesh"):
        vs = tcp_vs(gateways=gateways)
        if not gateways:
            vs = vs.replace("  gateways: []\n", "")
        result = load(gw(), vs)
        assert result.table.listeners == ()
        [n] = notices_about(result, "bound to the mesh only")
        assert n.message == "bound to the mesh only (no spec.gateways): ignored by tsgate"
        assert (n.resource, n.path) == ("VirtualService default/vs", "spec")
    assert not notices_about(load(gw(), tcp_vs(gateways="mesh, gw")), "mesh only")


def test_origination_error_is_said_once_for_the_clusters_sharing_the_settings(load: Any) -> None:
    rule = origination_dr(f"  trafficPolicy: {{tls: {BAD_TLS}}}\n")
    result = load(gw(), rule, weighted_vs("echo", "echo").replace("{number: 1}}\n      weight: 40",
                                                                  "{number: 2}}\n      weight: 40"))
    assert [e.path for e in result.errors if "nonexistent-ca" in e.message] == [
        "spec.trafficPolicy.tls.caCertificates"]


def test_origination_error_in_validate_mode_says_what_the_gateway_would_do(load: Any) -> None:
    rule = origination_dr(f"  trafficPolicy: {{tls: {BAD_TLS}}}\n")
    result = load(gw(), rule, tcp_vs(), tls_files_fatal=False)
    assert result.ok
    [w] = warnings_about(result, "nonexistent-ca")
    assert w.path == "spec.trafficPolicy.tls.caCertificates"
    assert w.message.endswith(" (Istio admits the YAML; tsgate would not serve this, and the "
                              "gateway refuses to start with it)")


def test_hostname_notice_is_said_once_per_virtual_service_host_and_port(load: Any) -> None:
    rule = dr("echo", "echo", "1s", extra="  subsets: [{name: v1}, {name: v2}]\n")
    vs = weighted_vs("echo", "echo").replace("{number: 1}}\n      weight: 60",
                                             "{number: 1}, subset: v1}\n      weight: 60") \
        .replace("{number: 1}}\n      weight: 40", "{number: 1}, subset: v2}\n      weight: 40")
    result = load(gw(), rule, vs)
    assert [c for c, _ in clusters(only_listener(result).tcp_route)] == [
        "outbound|1|v1|echo.default.svc.cluster.local",
        "outbound|1|v2|echo.default.svc.cluster.local"]
    assert len(notices_about(result, "no ServiceEntry names host")) == 1


def test_dns_service_entry_without_endpoints_connects_to_its_host_and_target_port(
        load: Any) -> None:
    se = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: pg, protocol: TCP, targetPort: 6543}]
  resolution: DNS
"""
    c = the_cluster(load(gw(), se, tcp_vs(host="db.example.com", port=5432)))
    assert (c.resolution, [(e.address, e.port) for e in c.endpoints]) == (
        "DNS", [("db.example.com", 6543)])


def test_static_service_entry_selecting_no_workload_has_no_endpoints(load: Any) -> None:
    se = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc}
spec:
  hosts: [svc.internal]
  ports: [{number: 80, name: tcp, protocol: TCP}]
  resolution: STATIC
  workloadSelector: {labels: {app: svc}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: other}
spec: {address: 10.9.0.1, labels: {app: svc}}
"""
    result = load(gw(), se, tcp_vs(host="svc.internal", port=80))
    assert the_cluster(result).endpoints == ()  # the WorkloadEntry is in another namespace
    [w] = warnings_about(result, "has no endpoints")
    assert w.message == ("cluster outbound|80||svc.internal has no endpoints: connections to "
                         "it fail (UH)")
    assert (w.resource, w.path) == ("VirtualService default/vs",
                                    "spec.tcp[0].route[0].destination")


def test_destination_rules_for_other_workloads_are_noted_once_and_skipped(load: Any) -> None:
    sidecar = dr("sidecar", "echo", "3s",
                 extra="  workloadSelector: {matchLabels: {app: sidecar-only}}\n")
    mine = dr("mine", "echo", "4s")
    vs = weighted_vs("echo", "echo").replace("{number: 1}}\n      weight: 40",
                                             "{number: 2}}\n      weight: 40")
    result = load(gw(), sidecar, mine, vs)
    assert [wc.cluster.connect_timeout for wc in only_listener(result).tcp_route.destinations] \
        == [4.0, 4.0]
    [n] = notices_about(result, "workloadSelector")
    assert n.message == "workloadSelector does not select this gateway: not applied"
    assert (n.resource, n.path) == ("DestinationRule default/sidecar", "spec.workloadSelector")
    result = load(gw(), mine, dr("again", "echo", "5s"), vs)  # two clusters, one warning
    assert len(warnings_about(result, "another DestinationRule")) == 1


# ------------------------------------------------------- cluster lookups


def test_destination_host_star_is_refused_and_builds_no_cluster(load: Any) -> None:
    result = load(gw(), tcp_vs(host='"*"'))
    assert not result.ok
    assert not notices_about(result, "no ServiceEntry names host")


def test_missing_port_and_subset_messages_list_what_exists(load: Any) -> None:
    vs = tcp_vs(host="echo.example.com", port=9999)
    [w] = [d for d in load(gw(), SE_STATIC, vs).diagnostics if d.code == "IST0101"]
    assert w.message.startswith('Referenced host:port not found: "echo.example.com:9999" '
                                "(ServiceEntry default/echo ports: 2701, 2702); ")
    no_port = tcp_vs(host="echo.example.com").replace(", port: {number: 2701}", "")
    [w] = [d for d in load(gw(), SE_STATIC, no_port).diagnostics if d.code == "IST0112"]
    assert w.path == "spec.tcp[0].route[0].destination"
    assert w.message.startswith(
        "no destination port and ServiceEntry default/echo (host echo.example.com) has several "
        "ports: the listener port 31400 is used, which it does not have (ServiceEntry "
        "default/echo ports: 2701, 2702); ")
    subset = tcp_vs(host="echo.example.com").replace("port: {number: 2701}",
                                                     "port: {number: 2701}, subset: v9")
    two = dr("echo", "echo.example.com", "1s", extra="  subsets: [{name: v1}, {name: v2}]\n")
    [w] = [d for d in load(gw(), SE_STATIC, two, subset).diagnostics if d.code == "IST0101"]
    assert w.message.startswith('Referenced host+subset in destinationrule not found: '
                                '"echo.example.com+v9" (DestinationRule default/echo has '
                                "subsets: v1, v2); ")
    [w] = [d for d in load(gw(), SE_STATIC, dr("echo", "echo.example.com", "1s"),
                           subset).diagnostics if d.code == "IST0101"]
    assert "(DestinationRule default/echo has subsets: none); " in w.message


def test_same_wildcard_host_twice_the_first_is_used(load: Any) -> None:
    """As for an exact host: the first ServiceEntry / DestinationRule (and no traceback)."""
    ses = (se_static("first", '["*.example.com"]'), se_static("second", '["*.example.com"]'))
    result = load(gw(), *ses, dr("a", "*.example.com", "1s"), dr("b", "*.example.com", "2s"),
                  tcp_vs(host="db.example.com", port=5432))
    c = the_cluster(result)
    assert [e.address for e in c.endpoints] == ["10.0.0.5"]
    assert c.connect_timeout == 1.0


def test_a_hidden_service_entry_listed_first_does_not_hide_the_next(load: Any) -> None:
    hidden = se_static("hidden", ns="other", extra="  exportTo: [.]\n")
    shown = se_static("shown")
    c = the_cluster(load(gw(), hidden, shown, tcp_vs(host="db.example.com", port=5432)))
    assert [e.address for e in c.endpoints] == ["10.0.0.5"]


def test_export_to_star_is_visible_everywhere(load: Any) -> None:
    public = se_static("echo", ns="other", extra='  exportTo: ["*"]\n')
    c = the_cluster(load(gw(), public, tcp_vs(host="db.example.com", port=5432)))
    assert c.resolution == "STATIC"


def test_route_to_a_missing_subset_keeps_the_rules_idle_timeout(load: Any) -> None:
    rule = idle_dr("echo", "5s")
    vs = tcp_vs().replace("port: {number: 2701}", "port: {number: 2701}, subset: v9")
    route = only_listener(load(gw(), rule, vs)).tcp_route
    assert route.destinations[0].cluster.missing
    assert route.idle_timeout == 5.0


def test_server_hosts_in_several_namespaces(load: Any) -> None:
    g = gw(ns="edge", hosts='"team-a/*", "team-b/*"')
    assert load(g, tcp_vs(ns="team-b", gateways="edge/gw")).table.listeners


def test_small_weights_count(load: Any) -> None:
    vs = weighted_vs("a", "b").replace("weight: 60", "weight: 99").replace("weight: 40",
                                                                          "weight: 1")
    route = only_listener(load(gw(), vs)).tcp_route
    assert [w for _, w in clusters(route)] == [99, 1]
    assert route.source.resource == "VirtualService default/vs"


def test_connection_pool_without_idle_timeout_keeps_the_default(load: Any) -> None:
    route = only_listener(load(gw(), dr("echo", "echo", "2s"), tcp_vs())).tcp_route
    assert (route.idle_timeout, route.max_connection_duration) == (3600.0, None)


def test_one_route_serves_the_same_port_on_two_addresses(load: Any) -> None:
    two = gw(extra="    bind: 127.0.0.1\n  - port: {number: 31400, name: b, protocol: TCP}\n"
                   "    hosts: [\"*\"]\n    bind: 127.0.0.2\n")
    a, b = ok(load(two, tcp_vs())).table.listeners
    assert (a.bind, b.bind) == ("127.0.0.1", "127.0.0.2")
    assert a.tcp_route is not None and a.tcp_route == b.tcp_route


def test_tls_rule_with_no_usable_destination_on_two_servers(load: Any) -> None:
    """No route on the first server, none on the second either (and no traceback)."""
    none = se_static("none").replace("resolution: STATIC", "resolution: NONE") \
        .replace("  endpoints: [{address: 10.0.0.4}]\n", "")
    two = gw(port=443, protocol="TLS", tls=True, hosts="a.example.com", extra="""\
  - port: {number: 443, name: second, protocol: TLS}
    hosts: [b.example.com]
    tls: {mode: PASSTHROUGH}
""")
    vs = tls_route("a.example.com, b.example.com", host="db.example.com").replace(
        "number: 443", "number: 5432")
    result = load(two, none, vs)
    assert len([e for e in result.errors if "has resolution NONE" in e.message]) == 1
    assert len(warnings_about(result, "no VirtualService has a tls route")) == 2


def test_public_virtual_service_comes_after_one_exported_by_name(load: Any) -> None:
    public = tcp_vs(name="public", host="one", extra='  exportTo: ["*"]\n')
    named = tcp_vs(name="named", host="two", extra="  exportTo: [default]\n")
    assert only_listener(load(gw(), public, named)).tcp_route.name == "default/named#tcp[0]"


def test_a_gateway_named_mesh_is_not_what_mesh_means(load: Any) -> None:
    """Istio: ``mesh`` in spec.gateways means the sidecars, never a Gateway of that name."""
    result = load(gw(name="mesh"), tcp_vs(gateways="mesh", hosts="echo.example.com"))
    assert ok(result).table.listeners == ()
    assert warnings_about(result, "no VirtualService has a tcp route for this server")


def test_a_virtual_service_not_exported_does_not_stop_the_next_binding(load: Any) -> None:
    private = tcp_vs(name="private", ns="apps", gateways="default/gw", extra="  exportTo: [.]\n")
    li = only_listener(load(gw(), private, tcp_vs(name="public", host="two")))
    assert li.tcp_route.name == "default/public#tcp[0]"


def annotated(text: Any, name: Any, value: Any, other: Any = True) -> Any:
    extra = "other: x, " if other else ""
    return text.replace(
        f"metadata: {{name: {name}, namespace: default}}",
        f"metadata:\n  name: {name}\n  annotations: {{{extra}tsgate.io/proxy-protocol: "
        f"'{value}'}}")


def test_annotations_after_other_keys_and_agreeing_gateways(load: Any) -> None:
    tcp = annotated(gw(name="a", port=443), "a", "required")
    tls = annotated(gw(name="b", port=443, protocol="TLS", tls=True), "b", "required")
    result = load(tcp, tls, tcp_vs(gateways="a"), tls_route("x.example.com", gateways="b"))
    assert only_listener(result).annotations == (("tsgate.io/proxy-protocol", "required"),)
    assert not warnings_about(result, "conflicts with")


def test_annotation_conflict_is_said_once_per_gateway_and_port(load: Any) -> None:
    tcp = annotated(gw(name="a", port=443), "a", "required", other=False)
    tls = annotated(gw(name="b", port=443, protocol="TLS", tls=True, hosts="x.example.com",
                       extra="""\
  - port: {number: 443, name: second, protocol: TLS}
    hosts: [y.example.com]
    tls: {mode: PASSTHROUGH}
"""), "b", "optional")
    result = load(tcp, tls, tcp_vs(gateways="a"),
                  tls_route("x.example.com, y.example.com", gateways="b"))
    assert len(only_listener(result).tls_chains) == 1
    assert len(warnings_about(result, "conflicts with")) == 1


def test_annotations_after_a_conflicting_one_still_apply(load: Any) -> None:
    tcp = annotated(gw(name="a", port=443), "a", "required", other=False)
    tls = annotated(gw(name="b", port=443, protocol="TLS", tls=True), "b", "optional",
                    other=False)
    tls = tls.replace("'optional'}", "'optional', tsgate.io/inspect-timeout: 2s}")
    result = load(tcp, tls, tcp_vs(gateways="a"), tls_route("x.example.com", gateways="b"))
    assert only_listener(result).annotations == (("tsgate.io/proxy-protocol", "required"),
                                                 ("tsgate.io/inspect-timeout", "2s"))


# ------------------------------------------------ more servers and matches


def test_unix_socket_server_and_the_port_bounds(load: Any) -> None:
    """Istio: a ``unix://`` bind takes port number 0; other servers 1-65535."""
    unix = gw(port=0, extra="    bind: unix:///tmp/tsgate-test.sock\n")
    li = only_listener(load(unix, tcp_vs()))
    assert (li.bind, li.port) == ("unix:///tmp/tsgate-test.sock", 0)
    for port in (1, 65535):
        assert only_listener(load(gw(port=port), tcp_vs())).port == port


def test_each_tls_match_is_tried(load: Any) -> None:
    """A match that does not apply, names nothing usable or clashes does not end the rule."""
    first = tls_route("a.example.com", name="first")
    vs = tls_route("b.example.com", name="later").replace("""  - match:
    - sniHosts: [b.example.com]
""", """  - match:
    - {port: 8443, sniHosts: [c.example.com]}
    - sniHosts: ["*x.example.com"]
    - sniHosts: [a.example.com]
    - sniHosts: [b.example.com]
""")
    li = only_listener(load(TLS_GW, first, vs))
    assert [(c.server_names, c.route.name) for c in li.tls_chains] == [
        (("a.example.com",), "default/first#tls[0]"), (("b.example.com",), "default/later#tls[0]")]


def test_a_match_emitted_for_one_server_does_not_end_the_rule_for_the_next(load: Any) -> None:
    g1 = gw(name="g1", port=443, protocol="TLS", tls=True, hosts="a.example.com")
    g2 = gw(name="g2", port=443, protocol="TLS", tls=True, hosts="b.example.com")
    vs = tls_route("a.example.com", gateways="g1, g2").replace(
        "    - sniHosts: [a.example.com]\n",
        "    - sniHosts: [a.example.com]\n    - {gateways: [g2], sniHosts: [b.example.com]}\n")
    li = only_listener(load(g1, g2, vs))
    assert [c.server_names for c in li.tls_chains] == [("a.example.com",), ("b.example.com",)]


def test_tls_destination_without_a_port_uses_the_servers(load: Any) -> None:
    vs = tls_route("a.example.com").replace(", port: {number: 443}", "")
    [chain] = only_listener(load(gw(port=8443, protocol="TLS", tls=True), vs)).tls_chains
    assert chain.route.destinations[0].cluster.name == \
        "outbound|8443||backend.default.svc.cluster.local"


def test_servers_after_a_skipped_or_auto_passthrough_one_are_served(load: Any) -> None:
    udp_first = gw(protocol="UDP", port=53, extra="""\
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
""")
    assert [li.port for li in ok(load(udp_first, tcp_vs())).table.listeners] == [31400]
    auto_first = AUTO_GW + """\
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
"""
    result = load(auto_first, INTERNAL_SE, tcp_vs())
    assert [li.port for li in ok(result).table.listeners] == [15443, 31400]


def test_second_tcp_server_on_a_port_is_skipped_where_it_is(load: Any) -> None:
    second = gw(name="b", port=9000, extra="""\
  - port: {number: 31400, name: again, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9001, name: after, protocol: TCP}
    hosts: ["*"]
""")
    result = load(gw(name="a"), second, tcp_vs(gateways="a, b"))
    [w] = warnings_about(result, "skipping server")
    assert (w.resource, w.path) == ("Gateway default/b", "spec.servers[1]")
    assert [li.port for li in ok(result).table.listeners] == [9000, 9001, 31400]


def test_tls_match_on_a_port_no_server_has_is_a_warning(load: Any) -> None:
    vs = tls_route("a.example.com").replace(
        "    - sniHosts: [a.example.com]\n",
        "    - sniHosts: [a.example.com]\n    - {port: 1234, sniHosts: [b.example.com]}\n")
    result = load(TLS_GW, vs)
    [w] = warnings_about(result, "listens on port")
    assert w.path == "spec.tls[0].match[1].port"


def test_no_listeners_warning_without_labels_and_with_only_service_entries(load: Any) -> None:
    anyone = gw().replace("  selector: {istio: ingressgateway}\n", "")
    result = load(anyone, tcp_vs(gateways="elsewhere"), gateway_labels={})
    [w] = warnings_about(result, "no listeners")
    assert "(no labels)" in w.message
    result = load(gw(), se_static("echo"), gateway_labels={"istio": "ingressgateway", "a": "b"})
    [w] = warnings_about(result, "no listeners")
    assert "(istio=ingressgateway, a=b)" in w.message


def test_server_without_a_port_is_an_error_not_a_traceback(load: Any) -> None:
    no_port = gw().replace("  - port: {number: 31400, name: p31400-tcp, protocol: TCP}\n",
                           "  - hosts: [\"*\"]\n").replace("    hosts: [\"*\"]\n", "", 1)
    result = load(no_port, tcp_vs())
    assert not result.ok and result.table.listeners == ()


def test_match_port_warning_names_every_gateway_of_the_match(load: Any) -> None:
    vs = tcp_vs(gateways="a, b").replace("  - route:", "  - match: [{port: 1234}]\n    route:")
    result = load(gw(name="a"), gw(name="b", port=9000), vs)
    [w] = warnings_about(result, "listens on port")
    assert w.message.startswith("no server of gateway default/a, default/b listens on port 1234")


# ------------------------------------------------- istioctl analyze's inputs


def test_conflicting_gateways_found_through_tsgates_labels_and_pods(load: Any) -> None:
    """IST0145: Gateways share a workload when tsgate itself, or a Pod given, matches both."""
    zoned = gw(name="b").replace("{istio: ingressgateway}", "{istio: ingressgateway, zone: a}")
    result = load(gw(name="a"), zoned, tcp_vs(gateways="a"),
                  gateway_labels={"istio": "ingressgateway", "zone": "a"})
    assert [d.code for d in result.diagnostics if d.code == "IST0145"]
    result = load(gw(name="a"), zoned, tcp_vs(gateways="a"))
    assert not [d.code for d in result.diagnostics if d.code == "IST0145"]
    pod = """\
apiVersion: v1
kind: Pod
metadata: {name: edge, labels: {istio: ingressgateway, zone: a}}
"""
    result = load(gw(name="a"), zoned, tcp_vs(gateways="a"), pod)
    assert [d.code for d in result.diagnostics if d.code == "IST0145"]
