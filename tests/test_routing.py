"""
The route-table contract (tsgate.routing), value by value: names, the
decision each kind of chain gives (route, chain token, reason in words),
the SNI index's handling of duplicates, and table lookups. The choice itself
is checked against Envoy's rules in tests/config/test_config_sni_index.py.
"""

from __future__ import annotations

from tsgate.routing import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    Cluster,
    Listener,
    Route,
    RouteTable,
    SniChain,
    SourceRef,
    WeightedCluster,
    sni_specificity,
)


def route(name: str) -> Route:
    return Route(name, ())


def test_defaults_are_envoy_and_istio_defaults():
    assert DEFAULT_IDLE_TIMEOUT == 3600.0 and DEFAULT_CONNECT_TIMEOUT == 10.0
    c = Cluster(name="outbound|1||h", host="h", port=1)
    assert (c.subset, c.resolution, c.endpoints, c.connect_timeout, c.lb_policy,
            c.max_connections) == ("", "STATIC", (), 10.0, "LEAST_REQUEST", None)
    r = route("r")
    assert (r.idle_timeout, r.max_connection_duration, r.source) == (3600.0, None, None)


def test_source_ref_reads_like_a_diagnostic():
    ref = SourceRef("vs.yaml", 12, "VirtualService default/echo", "spec.tcp[0]")
    assert str(ref) == "VirtualService default/echo spec.tcp[0] (vs.yaml:12)"


def test_stat_prefix_is_the_cluster_or_the_route_when_weighted():
    a = Cluster(name="outbound|1||a", host="a", port=1)
    b = Cluster(name="outbound|1||b", host="b", port=1)
    assert Route("ns/vs#tcp[0]", (WeightedCluster(a, 100),)).stat_prefix == "outbound|1||a"
    assert Route("ns/vs#tcp[0]", (WeightedCluster(a, 50), WeightedCluster(b, 50))
                 ).stat_prefix == "ns/vs#tcp[0]"


def test_listener_name_and_inspection():
    assert Listener("0.0.0.0", 31400).name == "0.0.0.0_31400"
    assert Listener("::1", 443).name == "::1_443"
    assert not Listener("0.0.0.0", 1, tcp_route=route("t")).inspect
    assert Listener("0.0.0.0", 1, (SniChain(("a",), route("a")),)).inspect


def test_decisions_name_the_chain_and_say_why():
    listener = Listener("0.0.0.0", 1, (
        SniChain(("Exact.Example.COM",), route("exact")),
        SniChain(("*.Example.com",), route("wild")),
    ), route("tcp"))
    d = listener.route_for_sni("exact.example.com.")
    assert (d.route.name, d.chain, d.reason) == (
        "exact", "sni:Exact.Example.COM", "SNI exact.example.com matched Exact.Example.COM")
    assert listener.route_for_sni("EXACT.example.Com").route.name == "exact"  # DNS ignores case
    assert listener.route_for_sni("A.EXAMPLE.COM.").route.name == "wild"
    d = listener.route_for_sni("a.b.example.com")
    assert (d.route.name, d.chain, d.reason) == (
        "wild", "sni:*.Example.com", "SNI a.b.example.com matched *.Example.com")
    d = listener.route_for_sni("example.com")
    assert (d.route.name, d.chain, d.reason) == (
        "tcp", "tcp", "SNI example.com matched no TLS chain; TCP route")
    d = listener.route_for_sni(None)
    assert (d.route.name, d.chain, d.reason) == (
        "tcp", "tcp", "SNI (none) matched no TLS chain; TCP route")
    with_catch_all = Listener("0.0.0.0", 1, listener.tls_chains + (SniChain((), route("any")),),
                              route("tcp"))
    d = with_catch_all.route_for_sni("example.org")
    assert (d.route.name, d.chain, d.reason) == (
        "any", "sni:*", "SNI example.org matched catch-all")
    assert with_catch_all.route_for_sni(None).reason == "SNI (none) matched catch-all"
    alone = Listener("0.0.0.0", 1, listener.tls_chains)
    d = alone.route_for_sni("example.org")
    assert (d.route, d.chain, d.reason) == (None, "none", "SNI example.org matched no chain")
    assert alone.route_for_sni(None).reason == "SNI (none) matched no chain"
    assert alone.route_for_sni("").reason == "SNI (none) matched no chain"


def test_the_first_chain_naming_a_pattern_keeps_it():
    """istiod de-duplicates SNI across chains; of duplicates, the first chain's wins."""
    listener = Listener("0.0.0.0", 1, (
        SniChain(("a.example.com", "*.example.com"), route("first")),
        SniChain(("A.example.com", "*.EXAMPLE.com"), route("second")),
        SniChain((), route("any")), SniChain((), route("second-any")),
    ))
    assert listener.route_for_sni("a.example.com").route.name == "first"
    assert listener.route_for_sni("b.example.com").route.name == "first"
    assert listener.route_for_sni("x.org").route.name == "any"


def test_a_wildcard_needs_a_whole_label():
    listener = Listener("0.0.0.0", 1, (SniChain(("*.example.com",), route("wild")),))
    for sni in ("example.com", "xexample.com", ".example.com", "example.com.evil"):
        assert listener.route_for_sni(sni).route is None, sni
    for sni in ("a.example.com", "a.b.c.example.com", "-.example.com"):
        assert listener.route_for_sni(sni).route is not None, sni
    # An empty label (explain accepts any --sni) still leaves ".example.com" as
    # the suffix, as the label-by-label rule says: every dot is tried.
    assert listener.route_for_sni("a..example.com").route is not None
    assert listener.route_for_sni("a.b..example.com").route is not None


def test_sni_specificity_orders_exact_then_longer_suffixes():
    """explain's per-candidate ranking (the data path uses the index)."""
    assert sni_specificity("www.example.com", "www.example.com") == 1_000_000
    assert sni_specificity("WWW.example.com", "www.example.com") == 1_000_000
    assert sni_specificity("www.example.com", "api.example.com") is None
    assert sni_specificity("*.example.com", "www.example.com") == len(".example.com")
    assert sni_specificity("*.com", "www.example.com") == len(".com")
    assert sni_specificity("*.example.com", "example.com") is None
    assert sni_specificity("*.example.com", ".example.com") is None
    assert sni_specificity("*.example.com", "wwwexample.com") is None


def test_route_table_finds_a_listener_by_bind_and_port():
    a, b = Listener("0.0.0.0", 1), Listener("127.0.0.1", 1)
    table = RouteTable((a, b))
    assert table.listener("0.0.0.0", 1) is a
    assert table.listener("127.0.0.1", 1) is b
    assert table.listener("0.0.0.0", 2) is None
    assert table.listener("::", 1) is None
    assert RouteTable().listeners == ()


# ---------------------------------------------------------------- the table's model


def _cluster(name: str) -> Cluster:
    return Cluster(name=f"outbound|80||{name}", host=name, port=80)


SHARED = _cluster("shared")
ONLY_TLS = _cluster("only-tls")
ONLY_TCP = _cluster("only-tcp")
SNI_ROUTE = Route("default/a#tls[0]", (WeightedCluster(ONLY_TLS, 80), WeightedCluster(SHARED, 20)))
CATCH_ALL_ROUTE = Route("default/b#tls[0]", (WeightedCluster(SHARED, 1),))
TCP_ROUTE = Route("default/c#tcp[0]", (WeightedCluster(ONLY_TCP, 1),))
SNI = SniChain(("a.example.com", "*.a.example.com"), SNI_ROUTE, termination="terminates")
CATCH_ALL = SniChain((), CATCH_ALL_ROUTE)
AUTHZ = object()
FIRST = Listener("0.0.0.0", 443, tls_chains=(SNI, CATCH_ALL), tcp_route=TCP_ROUTE, authz=AUTHZ)
SECOND = Listener("0.0.0.0", 9000, tcp_route=Route("default/d#tcp[0]",
                                                   (WeightedCluster(SHARED, 1),)))
MODEL = RouteTable((FIRST, SECOND))


def test_routes_are_every_chain_of_every_listener_in_order() -> None:
    entries = MODEL.routes()
    assert [(e.listener.name, e.match, e.route.name) for e in entries] == [
        ("0.0.0.0_443", "sni:a.example.com,*.a.example.com", "default/a#tls[0]"),
        ("0.0.0.0_443", "sni:*", "default/b#tls[0]"),
        ("0.0.0.0_443", "tcp", "default/c#tcp[0]"),
        ("0.0.0.0_9000", "tcp", "default/d#tcp[0]"),
    ]
    assert entries == FIRST.routes() + SECOND.routes()
    assert MODEL.routes() == entries  # stable: the same order every time
    assert [e.chain for e in entries] == [SNI, CATCH_ALL, None, None]


def test_route_entries_carry_the_chain_facts() -> None:
    sni, catch_all, tcp, only_tcp = MODEL.routes()
    assert (sni.server_names, catch_all.server_names, tcp.server_names) == (
        ("a.example.com", "*.a.example.com"), (), ())
    # TLS termination stays on its chain; authz on the listener every route is reached from
    assert (sni.termination, catch_all.termination, tcp.termination) == ("terminates", None, None)
    assert sni.listener.authz is AUTHZ and tcp.listener.authz is AUTHZ
    assert only_tcp.listener.authz is None
    # a TCP route is the fallback only beside SNI chains
    assert (sni.fallback, tcp.fallback, only_tcp.fallback) == (False, True, False)


def test_clusters_are_listed_once_in_order_of_first_use() -> None:
    assert MODEL.clusters() == (ONLY_TLS, SHARED, ONLY_TCP)
    assert MODEL.clusters() == MODEL.clusters()
    assert RouteTable().routes() == () and RouteTable().clusters() == ()


def test_percent_is_the_share_of_the_weights() -> None:
    low, high = SNI_ROUTE.destinations[1], SNI_ROUTE.destinations[0]
    assert (SNI_ROUTE.percent(high), SNI_ROUTE.percent(low)) == (80.0, 20.0)
    assert CATCH_ALL_ROUTE.percent(CATCH_ALL_ROUTE.destinations[0]) == 100.0


def test_a_decision_carries_its_chains_termination() -> None:
    """
    A terminated chain hands its Termination to the data path with the
    decision; passthrough and TCP decisions carry none. Catches the
    termination dropped from the exact/wildcard or catch-all decision
    (route_for_sni mutants 44, 48, 53, 57 of 2026-12-02).
    """
    exact_tls, wild_tls, any_tls = object(), object(), object()
    listener = Listener("0.0.0.0", 1, (
        SniChain(("a.example.com",), route("exact"), exact_tls),
        SniChain(("*.example.org",), route("wild"), wild_tls),
        SniChain((), route("any"), any_tls),
    ))
    assert listener.route_for_sni("a.example.com").termination is exact_tls
    assert listener.route_for_sni("b.example.org").termination is wild_tls
    assert listener.route_for_sni("other.test").termination is any_tls
    assert listener.route_for_sni(None).termination is any_tls
    passthrough = Listener("0.0.0.0", 1, (SniChain(("a.example.com",), route("p")),),
                           tcp_route=route("t"))
    assert passthrough.route_for_sni("a.example.com").termination is None
    assert passthrough.route_for_sni("b.example.com").termination is None


def test_trace_token_is_one_whitespace_free_token() -> None:
    """
    The access log's route field: ``sni:`` spelled ``tls:``, ``->route`` when
    routed, whitespace turned into ``_``; the chain alone when nothing routes.
    Catches every trace_token mutant (none had a test in the routing run).
    """
    from tsgate.routing import Decision, trace_token

    assert trace_token(Decision(route("ns/vs#tls[0]"), "sni:a.example.com", "why")) == \
        "tls:a.example.com->ns/vs#tls[0]"
    assert trace_token(Decision(route("ns/vs#tcp[0]"), "tcp", "why")) == "tcp->ns/vs#tcp[0]"
    assert trace_token(Decision(None, "none", "why")) == "none"
    assert trace_token(Decision(None, "sni:*", "why")) == "tls:*"
    assert trace_token(Decision(route("odd name\twith  spaces"), "tcp", "why")) == \
        "tcp->odd_name_with_spaces"
    # only a leading "sni:" is rewritten
    assert trace_token(Decision(None, "xsni:a", "why")) == "xsni:a"


def test_percent_is_the_destinations_share() -> None:
    """Weights as shares of their sum, in percent; all-zero weights give 0 (not a crash)."""
    a = Cluster(name="outbound|1||a", host="a", port=1)
    b = Cluster(name="outbound|1||b", host="b", port=1)
    r = Route("r", (WeightedCluster(a, 1), WeightedCluster(b, 3)))
    assert [r.percent(d) for d in r.destinations] == [25.0, 75.0]
    zero = Route("z", (WeightedCluster(a, 0),))
    assert zero.percent(zero.destinations[0]) == 0.0
