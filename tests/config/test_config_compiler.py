"""The compiler on the seed's walkthrough and on the Istio rules around it."""

from __future__ import annotations

import pytest

from tests.config.conftest import EXAMPLES
from tsgate.config import GatewayOptions, load_config, table_to_dict
from tsgate.routing import DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT

TCP = [EXAMPLES / "echo.yaml", EXAMPLES / "gateway-tcp.yaml", EXAMPLES / "echo-vs.yaml"]
SNI_ONE = [EXAMPLES / "sni/passthrough-sni-gateway.yaml",
           EXAMPLES / "sni/passthrough-sni-vs-1.yaml"]
SNI_BOTH = [EXAMPLES / "sni/passthrough-sni-gateway-both.yaml",
            EXAMPLES / "sni/passthrough-sni-vs-1.yaml", EXAMPLES / "sni/passthrough-sni-vs-2.yaml"]
LOCAL = EXAMPLES / "local"
SNI1 = "simple-sni-1.istioinaction.io"
SNI2 = "simple-sni-2.istioinaction.io"


def ok(result):
    assert result.ok, "\n".join(str(d) for d in result.errors)
    return result


def only_listener(result):
    [listener] = ok(result).table.listeners
    return listener


def seed(paths, **kwargs):
    return load_config([str(p) for p in paths], GatewayOptions(**kwargs))


def clusters(route):
    return [(wc.cluster.name, wc.weight) for wc in route.destinations]


# ------------------------------------------------------------------ the seed


def test_seed_tcp_only():
    """gateway-tcp + echo-vs: one plain TCP listener that never waits for client bytes."""
    li = only_listener(seed(TCP))
    assert (li.bind, li.port, li.name) == ("0.0.0.0", 31400, "0.0.0.0_31400")
    assert li.inspect is False
    assert li.tls_chains == ()
    assert li.protocols == ("TCP",) and li.port_names == ("tcp-echo",)
    route = li.tcp_route
    assert route.name == "default/tcp-echo-vs-from-gw#tcp[0]"
    assert route.stat_prefix == "outbound|2701||tcp-echo-service.default.svc.cluster.local"
    assert route.idle_timeout == DEFAULT_IDLE_TIMEOUT
    [wc] = route.destinations
    c = wc.cluster
    assert (c.resolution, c.host, c.port, c.subset) == (
        "HOSTNAME", "tcp-echo-service.default.svc.cluster.local", 2701, "")
    assert [(e.address, e.port) for e in c.endpoints] == [("tcp-echo-service", 2701)]
    assert c.connect_timeout == DEFAULT_CONNECT_TIMEOUT
    assert route.source.file.endswith("echo-vs.yaml") and route.source.line == 11
    assert route.source.path == "spec.tcp[0]"
    assert li.route_for_sni(None).route is route


def test_seed_tcp_in_the_books_namespace():
    li = only_listener(seed(TCP, default_namespace="istioinaction"))
    assert li.tcp_route.name == "istioinaction/tcp-echo-vs-from-gw#tcp[0]"
    assert clusters(li.tcp_route) == [
        ("outbound|2701||tcp-echo-service.istioinaction.svc.cluster.local", 100)]


def test_seed_tcp_with_local_service_entries():
    li = only_listener(seed(TCP + [LOCAL]))
    [wc] = li.tcp_route.destinations
    assert wc.cluster.resolution == "STATIC"
    assert [(e.address, e.port) for e in wc.cluster.endpoints] == [("127.0.0.1", 2701)]


def test_seed_sni_one():
    li = only_listener(seed(SNI_ONE + [LOCAL]))
    assert li.inspect is True
    assert li.tcp_route is None
    [chain] = li.tls_chains
    assert chain.server_names == (SNI1,)
    assert chain.route.name == "default/simple-sni-1-vs#tls[0]"
    [wc] = chain.route.destinations
    assert wc.cluster.name == "outbound|80||simple-tls-service-1.default.svc.cluster.local"
    assert [(e.address, e.port) for e in wc.cluster.endpoints] == [("127.0.0.1", 9081)]
    assert li.route_for_sni(SNI1).route is chain.route
    assert li.route_for_sni(SNI2).route is None
    assert li.route_for_sni(None).chain == "none"


def test_seed_sni_both():
    li = only_listener(seed(SNI_BOTH + [LOCAL]))
    assert [c.server_names for c in li.tls_chains] == [(SNI1,), (SNI2,)]
    assert li.port_names == ("tcp-sni-1", "tcp-sni-2")
    assert li.route_for_sni(SNI2).route.destinations[0].cluster.endpoints[0].port == 9082
    assert li.route_for_sni("SIMPLE-SNI-1.istioinaction.io.").route.name == \
        "default/simple-sni-1-vs#tls[0]"


@pytest.mark.parametrize("tcp_first", [True, False])
def test_seed_tcp_and_tls_on_one_port_in_either_order(tcp_first):
    """Both compile: SNI chains, and the TCP route for everything else (Istio: order-dependent)."""
    paths = TCP + SNI_BOTH if tcp_first else SNI_BOTH + TCP
    result = seed(paths + [LOCAL])
    li = only_listener(result)
    assert li.inspect is True
    assert sorted(c.server_names for c in li.tls_chains) == [(SNI1,), (SNI2,)]
    assert li.tcp_route.name == "default/tcp-echo-vs-from-gw#tcp[0]"
    assert li.route_for_sni(SNI1).chain == f"sni:{SNI1}"
    assert li.route_for_sni(None).chain == "tcp"
    assert li.route_for_sni("other.example.com").route is li.tcp_route
    assert set(li.protocols) == {"TCP", "TLS"}
    note = [d for d in result.notices if "istio#27481" in d.message]
    assert bool(note) == tcp_first


def test_seed_directory_with_both_gateway_files_uses_the_later_one():
    """sni/ has two definitions of sni-passthrough-gateway; the later file (sorted) wins."""
    result = load_config([str(EXAMPLES / "sni"), str(LOCAL)])
    li = only_listener(result)
    assert [c.server_names for c in li.tls_chains] == [(SNI1,)]
    assert any("defined again" in w.message for w in result.warnings)
    assert any(w.resource == "VirtualService default/simple-sni-2-vs" and "bound to no server"
               in w.message for w in result.warnings)


# ------------------------------------------------------------ building blocks

GW = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: {pname}, protocol: {protocol}}}
    hosts: [{hosts}]
{extra}"""


def gw(name="gw", ns="default", port=31400, protocol="TCP", hosts='"*"', pname=None, tls=False,
       extra=""):
    if tls:
        extra = "    tls: {mode: PASSTHROUGH}\n" + extra
    return GW.format(name=name, ns=ns, port=port, protocol=protocol, hosts=hosts,
                     pname=pname or f"p{port}-{protocol.lower()}", extra=extra)


def tcp_vs(name="vs", ns="default", gateways="gw", host="echo", port=2701, hosts='"*"',
           extra=""):
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{hosts}]
  gateways: [{gateways}]
  tcp:
  - route:
    - destination: {{host: {host}, port: {{number: {port}}}}}
{extra}"""


def tls_vs(name, sni, host="backend", hosts='"*"', gateways="gw", ns="default", extra=""):
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{hosts}]
  gateways: [{gateways}]
  tls:
  - match:
    - sniHosts: [{sni}]
    route:
    - destination: {{host: {host}, port: {{number: 443}}}}
{extra}"""


def test_wildcard_sni_precedence(load):
    result = load(gw(port=443, protocol="TLS", tls=True),
                  tls_vs("star", '"*"', host="c"),
                  tls_vs("wild", '"*.example.com"', host="b"),
                  tls_vs("deeper", '"*.x.example.com"', host="d"),
                  tls_vs("exact", "a.example.com", host="a"))
    li = only_listener(result)
    assert li.tls_chains[0].server_names == ()  # "*" is the catch-all chain

    def where(sni):
        d = li.route_for_sni(sni)
        return d.route.destinations[0].cluster.host.split(".")[0] if d.route else None

    assert where("a.example.com") == "a"
    assert where("z.example.com") == "b"
    assert where("q.x.example.com") == "d"
    assert where("example.com") == "c"
    assert where(None) == "c"


def test_duplicate_sni_first_wins_with_warning(load):
    result = load(gw(port=443, protocol="TLS", tls=True),
                  tls_vs("first", "a.example.com", host="one"),
                  tls_vs("second", "a.example.com", host="two"))
    li = only_listener(result)
    [chain] = li.tls_chains
    assert chain.route.name == "default/first#tls[0]"
    [w] = [w for w in result.warnings if "duplicate SNI" in w.message]
    assert w.resource == "VirtualService default/second"
    assert w.path == "spec.tls[0].match[0].sniHosts"
    assert "already routed by default/first#tls[0]" in w.message


def test_weights_are_relative_and_zero_is_dropped(load):
    vs = tcp_vs().replace("""  - route:
    - destination: {host: echo, port: {number: 2701}}
""", """  - route:
    - destination: {host: a, port: {number: 1}}
      weight: 70
    - destination: {host: b, port: {number: 1}}
      weight: 30
    - destination: {host: c, port: {number: 1}}
      weight: 0
""")
    li = only_listener(load(gw(), vs))
    assert clusters(li.tcp_route) == [("outbound|1||a.default.svc.cluster.local", 70),
                                      ("outbound|1||b.default.svc.cluster.local", 30)]
    assert li.tcp_route.stat_prefix == "default/vs#tcp[0]"


def test_lone_destination_gets_everything_whatever_its_weight(load):
    vs = tcp_vs(extra="      weight: 5\n")
    li = only_listener(load(gw(), vs))
    assert [wc.weight for wc in li.tcp_route.destinations] == [100]


SE_STATIC = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.example.com]
  ports:
  - {number: 2701, name: tcp, protocol: TCP, targetPort: 9000}
  - {number: 2702, name: other, protocol: TCP}
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, ports: {tcp: 9100, other: 9200}, labels: {version: v2}, weight: 3}
"""


def test_service_entry_static_port_mapping_and_target_port(load):
    li = only_listener(load(gw(), SE_STATIC, tcp_vs(host="echo.example.com")))
    [wc] = li.tcp_route.destinations
    assert wc.cluster.name == "outbound|2701||echo.example.com"
    assert wc.cluster.resolution == "STATIC"
    assert [(e.address, e.port, e.weight) for e in wc.cluster.endpoints] == [
        ("10.0.0.1", 9000, 1), ("10.0.0.2", 9100, 3)]
    li = only_listener(load(gw(), SE_STATIC, tcp_vs(host="echo.example.com", port=2702)))
    assert [(e.address, e.port) for e in li.tcp_route.destinations[0].cluster.endpoints] == [
        ("10.0.0.1", 2702), ("10.0.0.2", 9200)]


def test_service_entry_dns_uses_endpoint_names_or_the_host(load):
    se = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: pg, protocol: TCP}]
  resolution: DNS
"""
    li = only_listener(load(gw(), se, tcp_vs(host="db.example.com", port=5432)))
    c = li.tcp_route.destinations[0].cluster
    assert (c.resolution, [(e.address, e.port) for e in c.endpoints]) == (
        "DNS", [("db.example.com", 5432)])
    se2 = se + "  endpoints: [{address: replica-1.internal}, {address: 10.1.1.1}]\n"
    li = only_listener(load(gw(), se2, tcp_vs(host="db.example.com", port=5432)))
    assert [e.address for e in li.tcp_route.destinations[0].cluster.endpoints] == [
        "replica-1.internal", "10.1.1.1"]


def test_destination_port_omitted(load):
    """One-port ServiceEntry: its port; no ServiceEntry: the listener's port."""
    vs = tcp_vs(host="echo.example.com").replace(", port: {number: 2701}", "")
    se = SE_STATIC.replace("  - {number: 2702, name: other, protocol: TCP}\n", "").replace(
        ", other: 9200", "")
    li = only_listener(load(gw(), se, vs))
    assert li.tcp_route.destinations[0].cluster.port == 2701
    li = only_listener(load(gw(), vs))
    c = li.tcp_route.destinations[0].cluster
    assert (c.port, c.endpoints[0].port) == (31400, 31400)


DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo.example.com
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool:
      tcp: {connectTimeout: 2s, idleTimeout: 0s, maxConnectionDuration: 1h, maxConnections: 7}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {tcp: {connectTimeout: 500ms}}
"""


def test_destination_rule_policy_and_subsets(load):
    vs = tcp_vs(host="echo.example.com").replace("port: {number: 2701}",
                                                 "port: {number: 2701}, subset: v2")
    li = only_listener(load(gw(), SE_STATIC, DR, vs))
    route = li.tcp_route
    assert route.idle_timeout == 0  # 0s disables
    assert route.max_connection_duration == 3600
    c = route.destinations[0].cluster
    assert c.name == "outbound|2701|v2|echo.example.com"
    assert [e.address for e in c.endpoints] == ["10.0.0.2"]
    assert c.connect_timeout == 0.5  # subset policy overrides
    assert c.max_connections is None  # the subset's connectionPool replaces the DR's
    assert c.lb_policy == "RANDOM"
    vs1 = vs.replace("subset: v2", "subset: v1")
    c1 = only_listener(load(gw(), SE_STATIC, DR, vs1)).tcp_route.destinations[0].cluster
    assert ([e.address for e in c1.endpoints], c1.connect_timeout, c1.max_connections) == (
        ["10.0.0.1"], 2.0, 7)


def test_destination_rule_short_host_and_port_level_settings(load):
    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 3s, idleTimeout: 30s}}
    portLevelSettings:
    - port: {number: 2701}
      connectionPool: {tcp: {connectTimeout: 1s}}
"""
    li = only_listener(load(gw(), dr, tcp_vs()))
    assert li.tcp_route.destinations[0].cluster.connect_timeout == 1.0
    assert li.tcp_route.idle_timeout == 30.0  # top-level, as Istio's tcp_proxy idle_timeout


def test_gateway_selection_by_labels(load):
    other = gw(name="other").replace("{istio: ingressgateway}", "{app: edge}")
    everyone = gw(name="all", port=9000).replace("  selector: {istio: ingressgateway}\n", "")
    vs = tcp_vs(gateways="other, all")
    result = load(other, everyone, vs)
    assert [li.port for li in ok(result).table.listeners] == [9000]
    assert any("not for this gateway" in n.message for n in result.notices)
    result = load(other, everyone, vs, gateway_labels={"app": "edge", "x": "y"})
    assert [li.port for li in ok(result).table.listeners] == [9000, 31400]


def test_no_gateway_selected_is_a_warning(load):
    result = load(gw(), tcp_vs(), gateway_labels={"app": "nobody"})
    assert result.table.listeners == ()
    assert any("no Gateway selects this gateway's labels app=nobody" in w.message
               for w in result.warnings)


def test_namespaced_gateway_references(load):
    g = gw(ns="edge")
    assert only_listener(load(g, tcp_vs(ns="apps", gateways="edge/gw"))).tcp_route.name == \
        "apps/vs#tcp[0]"
    result = load(g, tcp_vs(ns="apps", gateways="gw"))  # means apps/gw
    assert result.table.listeners == ()
    assert any(w.path == "spec.gateways[0]" and "gateway apps/gw not found" in w.message
               for w in result.warnings)


def test_server_host_namespace_prefix(load):
    g = gw(ns="edge", hosts='"team-a/*"')
    assert load(g, tcp_vs(ns="team-a", gateways="edge/gw")).table.listeners
    result = load(g, tcp_vs(ns="team-b", gateways="edge/gw"))
    assert result.table.listeners == ()
    assert any("bound to no server" in w.message for w in result.warnings)


def test_export_to(load):
    g = gw(ns="edge")
    private = tcp_vs(ns="apps", gateways="edge/gw", extra="  exportTo: [.]\n")
    result = load(g, private)
    assert result.table.listeners == ()
    assert any("not exported to namespace edge" in n.message for n in result.notices)
    assert load(g, private, gateway_namespace="apps").table.listeners
    shared = tcp_vs(ns="apps", gateways="edge/gw", extra="  exportTo: [edge]\n")
    assert load(g, shared).table.listeners


def test_export_to_of_service_entries(load):
    se = SE_STATIC.replace("metadata: {name: echo}", "metadata: {name: echo, namespace: other}") \
        + "  exportTo: [.]\n"
    li = only_listener(load(gw(), se, tcp_vs(host="echo.example.com")))
    assert li.tcp_route.destinations[0].cluster.resolution == "HOSTNAME"


def test_two_tcp_servers_on_one_port_first_wins(load):
    result = load(gw(name="a"), gw(name="b"), tcp_vs(gateways="a", host="one"),
                  tcp_vs(name="vs2", gateways="b", host="two"))
    li = only_listener(result)
    assert li.tcp_route.name == "default/vs#tcp[0]"
    [w] = [w for w in result.warnings if "skipping server" in w.message]
    assert w.resource == "Gateway default/b"
    assert "already has the TCP server Gateway default/a spec.servers[0]" in w.message


def test_one_tcp_route_per_port_first_bound_vs_wins(load):
    result = load(gw(), tcp_vs(host="one"), tcp_vs(name="late", host="two"))
    li = only_listener(result)
    assert li.tcp_route.name == "default/vs#tcp[0]"
    assert any(w.resource == "VirtualService default/late" and "already routed by" in w.message
               for w in result.warnings)


def test_tcp_match_port_must_match_the_server_port(load):
    vs = tcp_vs().replace("  - route:", "  - match: [{port: 1234}]\n    route:")
    result = load(gw(), vs)
    assert result.table.listeners == ()
    assert any("no VirtualService has a tcp route" in w.message for w in result.warnings)


def test_tcp_rules_on_a_tls_server_are_ignored(load):
    result = load(gw(port=443, protocol="TLS", tls=True), tcp_vs())
    assert result.table.listeners == ()
    assert any("tcp rules are ignored on the TLS PASSTHROUGH server" in w.message
               for w in result.warnings)


def test_https_passthrough_is_like_tls(load):
    li = only_listener(load(gw(port=443, protocol="HTTPS", tls=True), tls_vs("a", "a.example.com")))
    assert li.tls_chains[0].server_names == ("a.example.com",)
    assert li.protocols == ("HTTPS",)


def test_bind_and_annotations(load):
    g = gw(extra="    bind: 127.0.0.1\n").replace(
        "metadata: {name: gw, namespace: default}",
        "metadata:\n  name: gw\n  annotations: {tsgate.io/proxy-protocol: 'true', other: x}")
    li = only_listener(load(g, tcp_vs()))
    assert (li.bind, li.port) == ("127.0.0.1", 31400)
    assert li.annotations == (("tsgate.io/proxy-protocol", "true"),)


def test_workload_entries_selected_by_service_entry(load):
    se = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc}
spec:
  hosts: [svc.internal]
  ports: [{number: 80, name: tcp, protocol: TCP, targetPort: 8080}]
  resolution: STATIC
  workloadSelector: {labels: {app: svc}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1}
spec: {address: 10.9.0.1, labels: {app: svc}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm2}
spec: {address: 10.9.0.2, labels: {app: other}}
"""
    li = only_listener(load(gw(), se, tcp_vs(host="svc.internal", port=80)))
    assert [(e.address, e.port) for e in li.tcp_route.destinations[0].cluster.endpoints] == [
        ("10.9.0.1", 8080)]


def test_errors_give_an_empty_table_and_keep_the_diagnostics(load):
    result = load(gw(), tcp_vs(host="echo", port=0))
    assert not result.ok
    assert result.table.listeners == ()


def test_table_to_dict_is_json_ready():
    import json

    result = seed(TCP + SNI_BOTH + [LOCAL])
    data = json.loads(json.dumps(table_to_dict(result.table)))
    [li] = data["listeners"]
    assert li["name"] == "0.0.0.0_31400" and li["inspect"] is True
    assert [c["server_names"] for c in li["tls_chains"]] == [[SNI1], [SNI2]]
    assert li["tcp_route"]["destinations"] == [
        {"cluster": "outbound|2701||tcp-echo-service.default.svc.cluster.local", "weight": 100}]
    names = [c["name"] for c in data["clusters"]]
    assert len(names) == len(set(names)) == 3
    json.dumps(result.to_dict())  # resources and diagnostics too


def test_private_virtual_services_come_before_public_ones(load):
    """Istio's order: exportTo [.] in the gateway's namespace, exported by name, public."""
    public = tcp_vs(name="public", host="one")
    named = tcp_vs(name="named", host="two", extra="  exportTo: [default, other]\n")
    private = tcp_vs(name="private", host="three", extra="  exportTo: [.]\n")
    li = only_listener(load(gw(), public, named, private))
    assert li.tcp_route.name == "default/private#tcp[0]"
    li = only_listener(load(gw(), public, named))
    assert li.tcp_route.name == "default/named#tcp[0]"


def test_destination_rule_workload_selector(load):
    dr = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  workloadSelector: {matchLabels: {app: sidecar-only}}
  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 3s}}}
"""
    result = load(gw(), dr, tcp_vs())
    assert only_listener(result).tcp_route.destinations[0].cluster.connect_timeout == 10.0
    assert any("workloadSelector does not select this gateway" in n.message
               for n in result.notices)
    mine = dr.replace("{app: sidecar-only}", "{istio: ingressgateway}")
    assert only_listener(load(gw(), mine, tcp_vs())).tcp_route.destinations[0] \
        .cluster.connect_timeout == 3.0
