"""
A bound route to a subset no DestinationRule defines, or to a port its
ServiceEntry does not have, is valid Istio (issue #9): istioctl analyze
reports IST0101 and istiod builds the route to a cluster that does not
exist, so Envoy closes such connections at once with ``NC``. tsgate warns
with the same code, keeps the rest of the table, and compiles the route to a
cluster marked ``missing`` (no endpoints) that the data path refuses with
``NC`` (tests/proxy/test_connection_missing_cluster.py, tests/e2e/test_missing_cluster_e2e.py).
"""

from __future__ import annotations

from tsgate.config import table_to_dict

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp-a, protocol: TCP}
    hosts: ["*"]
  - port: {number: 31401, name: tcp-b, protocol: TCP}
    hosts: ["*"]
"""

SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.example.com]
  ports: [{number: 2701, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}}
"""

DESTINATION_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo.example.com
  subsets: [{name: v1, labels: {version: v1}}]
"""


def virtual_service(name: str, port: int, *destinations: str) -> str:
    routes = "".join(f"    - destination: {d}\n" + ("      weight: 50\n" if len(destinations) > 1
                                                    else "")
                     for d in destinations)
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{{port: {port}}}]
    route:
{routes}"""


GOOD = "{host: echo.example.com, subset: v1, port: {number: 2701}}"
NO_SUBSET = "{host: echo.example.com, subset: v2, port: {number: 2701}}"
NO_PORT = "{host: echo.example.com, port: {number: 2702}}"


def routes_by_port(result):
    return {li.port: li.tcp_route for li in result.table.listeners}


def test_missing_subset_is_ist0101_warning_and_table_is_kept(load):
    result = load(GATEWAY, SERVICE_ENTRY, DESTINATION_RULE,
                  virtual_service("bad", 31400, NO_SUBSET), virtual_service("good", 31401, GOOD))
    assert result.ok, "\n".join(str(d) for d in result.errors)
    [w] = [d for d in result.warnings if d.code == "IST0101"]
    assert w.resource == "VirtualService default/bad"
    assert w.path == "spec.tcp[0].route[0].destination.subset"
    assert 'Referenced host+subset in destinationrule not found: "echo.example.com+v2"' \
        in w.message
    assert "DestinationRule default/echo has subsets: v1" in w.message
    assert "closed at once (NC)" in w.message
    assert str(w).endswith("[IST0101]")
    routes = routes_by_port(result)
    assert set(routes) == {31400, 31401}
    [bad] = routes[31400].destinations
    assert bad.cluster.name == "outbound|2701|v2|echo.example.com"
    assert bad.cluster.missing and bad.cluster.endpoints == ()
    [good] = routes[31401].destinations
    assert good.cluster.name == "outbound|2701|v1|echo.example.com"
    assert not good.cluster.missing
    assert [(e.address, e.port) for e in good.cluster.endpoints] == [("127.0.0.1", 2701)]


def test_missing_subset_without_any_destination_rule(load):
    result = load(GATEWAY, SERVICE_ENTRY, virtual_service("bad", 31400, NO_SUBSET))
    assert result.ok
    [w] = [d for d in result.warnings if d.code == "IST0101"]
    assert "no DestinationRule for host echo.example.com" in w.message
    assert routes_by_port(result)[31400].destinations[0].cluster.missing


def test_port_the_service_entry_lacks_is_ist0101_warning(load):
    result = load(GATEWAY, SERVICE_ENTRY, virtual_service("bad", 31400, NO_PORT),
                  virtual_service("good", 31401, GOOD.replace(", subset: v1", "")))
    assert result.ok, "\n".join(str(d) for d in result.errors)
    [w] = [d for d in result.warnings if d.code == "IST0101"]
    assert w.path == "spec.tcp[0].route[0].destination.port"
    assert 'Referenced host:port not found: "echo.example.com:2702"' in w.message
    assert "ServiceEntry default/echo ports: 2701" in w.message
    assert "closed at once (NC)" in w.message
    routes = routes_by_port(result)
    [bad] = routes[31400].destinations
    assert bad.cluster.name == "outbound|2702||echo.example.com"
    assert bad.cluster.missing
    assert not routes[31401].destinations[0].cluster.missing


def test_no_port_on_a_multi_port_service_uses_the_listener_port(load):
    se = SERVICE_ENTRY.replace(
        "ports: [{number: 2701, name: tcp, protocol: TCP}]",
        "ports: [{number: 2701, name: tcp, protocol: TCP}, {number: 2703, name: tcp-2}]")
    result = load(GATEWAY, se, virtual_service("bad", 31400, "{host: echo.example.com}"))
    assert result.ok
    [w] = [d for d in result.warnings if d.code == "IST0112"]
    assert "the listener port 31400 is used" in w.message
    assert routes_by_port(result)[31400].destinations[0].cluster.name == \
        "outbound|31400||echo.example.com"


def test_weighted_route_keeps_the_missing_destination_and_its_weight(load):
    result = load(GATEWAY, SERVICE_ENTRY, DESTINATION_RULE,
                  virtual_service("split", 31400, GOOD, NO_SUBSET))
    assert result.ok
    route = routes_by_port(result)[31400]
    assert [(wc.cluster.name, wc.cluster.missing, wc.weight) for wc in route.destinations] == [
        ("outbound|2701|v1|echo.example.com", False, 50),
        ("outbound|2701|v2|echo.example.com", True, 50)]


def test_warned_once_and_strict_refuses(load):
    result = load(GATEWAY, SERVICE_ENTRY, DESTINATION_RULE,
                  virtual_service("bad", 31400, NO_SUBSET))
    assert len([d for d in result.diagnostics if d.code == "IST0101"]) == 1
    from tsgate.config.diagnostics import strict

    assert any(d.code == "IST0101" and d.severity == "error"
               for d in strict(result.diagnostics))


def test_dump_and_routes_say_missing(load):
    from tsgate.cli import format_table

    result = load(GATEWAY, SERVICE_ENTRY, DESTINATION_RULE,
                  virtual_service("bad", 31400, NO_SUBSET), virtual_service("good", 31401, GOOD))
    dumped = {c["name"]: c["missing"] for c in table_to_dict(result.table)["clusters"]}
    assert dumped == {"outbound|2701|v2|echo.example.com": True,
                      "outbound|2701|v1|echo.example.com": False}
    text = format_table(result.table)
    assert "outbound|2701|v2|echo.example.com 100% STATIC (cluster not found: " \
           "connections closed, NC)" in text
    assert "outbound|2701|v1|echo.example.com 100% STATIC 127.0.0.1:2701" in text


def test_unbound_virtual_service_still_analyzed_once(load):
    """Not bound to a Gateway: the analyzer's IST0101, not the compiler's."""
    vs = virtual_service("meshonly", 31400, NO_SUBSET).replace("gateways: [gw]",
                                                               "gateways: [mesh]")
    result = load(GATEWAY, SERVICE_ENTRY, DESTINATION_RULE, vs)
    found = [d for d in result.diagnostics if d.code == "IST0101"]
    assert len(found) == 1 and "closed at once" not in found[0].message


def test_explain_says_cluster_not_found(load):
    from tsgate.explain import explain

    result = load(GATEWAY, SERVICE_ENTRY, DESTINATION_RULE,
                  virtual_service("bad", 31400, NO_SUBSET))
    text = "\n".join(explain(result.table, port=31400).lines())
    assert "outbound|2701|v2|echo.example.com (weight 100)" in text
    assert "cluster not found (no such subset or port): connections closed at once, NC" in text
    assert "connect timeout" not in text


def test_tls_passthrough_chain_to_a_missing_subset_is_kept(load):
    gateway = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [a.example.com, b.example.com]
    tls: {mode: PASSTHROUGH}
"""
    vs = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [gw]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com]}]
    route: [{destination: {host: echo.example.com, subset: v2, port: {number: 2701}}}]
  - match: [{port: 443, sniHosts: [b.example.com]}]
    route: [{destination: {host: echo.example.com, subset: v1, port: {number: 2701}}}]
"""
    result = load(gateway, SERVICE_ENTRY, DESTINATION_RULE, vs)
    assert result.ok, "\n".join(str(d) for d in result.errors)
    [w] = [d for d in result.warnings if d.code == "IST0101"]
    assert w.path == "spec.tls[0].route[0].destination.subset"
    [listener] = result.table.listeners
    chains = {c.server_names: c.route.destinations[0].cluster for c in listener.tls_chains}
    assert chains[("a.example.com",)].missing
    assert not chains[("b.example.com",)].missing
