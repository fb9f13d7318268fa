"""
The compiled table's precomputed SNI lookup chooses exactly what Envoy's
rules say, checked against a plain re-statement of those rules written here
(not the product's ``sni_specificity``, which would share its bugs).

Envoy's filter-chain match on ``server_names`` (docs/design.md, "SNI
routing"; Envoy's FilterChainMatch documentation): an exact name beats every
wildcard; among wildcards the one fixing more labels wins
(``*.b.example.com`` > ``*.example.com`` > ``*.com``); a wildcard matches
one or more labels to its left but not its own suffix; then a chain without
server names (catch-all), then the port's TCP route, then nothing (``NR``).
Names compare case-insensitively, without a trailing dot. The same name in
two chains: the first chain wins (istiod de-duplicates; Envoy would refuse).
"""

from __future__ import annotations

import gc
from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from tsgate import routing
from tsgate.routing import Listener, Route, SniChain

LABELS = st.sampled_from(["a", "b", "example", "com", "x-y"])
NAMES = st.lists(LABELS, min_size=1, max_size=4).map(".".join)
PATTERNS = st.one_of(NAMES, NAMES.map(lambda n: "*." + n), NAMES.map(str.upper),
                     NAMES.map(lambda n: "*." + n.upper()))


def envoy_matches(pattern: str, sni: str) -> bool:
    """Does a ``server_names`` entry match this (lower-case, dot-less) SNI?"""
    pattern = pattern.lower()
    if not pattern.startswith("*."):
        return pattern == sni
    fixed = pattern[2:].split(".")
    labels = sni.split(".")
    return len(labels) > len(fixed) and labels[len(labels) - len(fixed):] == fixed


def envoy_rank(pattern: str) -> tuple[int, int]:
    """Exact names first; then wildcards by how many labels they fix."""
    if not pattern.startswith("*."):
        return (1, 0)
    return (0, len(pattern[2:].split(".")))


def reference(listener: Listener, sni: Optional[str]) -> tuple[Optional[str], str]:
    """Exact > longest wildcard suffix > first catch-all > TCP route > none, chain by chain."""
    if sni is not None:
        sni = sni.lower().rstrip(".")
    best: Optional[SniChain] = None
    best_rank = (-1, -1)
    catch_all = None
    for chain in listener.tls_chains:
        if not chain.server_names:
            catch_all = catch_all or chain
            continue
        for pattern in chain.server_names if sni is not None else ():
            if envoy_matches(pattern, sni or "") and envoy_rank(pattern) > best_rank:
                best, best_rank = chain, envoy_rank(pattern)  # ">": the first chain keeps a tie
    if best is not None:
        return best.route.name, "sni"
    if catch_all is not None:
        return catch_all.route.name, "sni:*"
    if listener.tcp_route is not None:
        return listener.tcp_route.name, "tcp"
    return None, "none"


@st.composite
def listeners(draw):
    chains = []
    for i in range(draw(st.integers(0, 6))):
        names = tuple(draw(st.lists(PATTERNS, max_size=3)))
        chains.append(SniChain(names, Route(f"r{i}", ())))
    tcp = Route("tcp", ()) if draw(st.booleans()) else None
    return Listener("0.0.0.0", 1, tuple(chains), tcp)


@settings(max_examples=300, deadline=None)
@given(listeners(), st.one_of(st.none(), NAMES, NAMES.map(lambda n: n.upper() + ".")))
def test_indexed_choice_equals_the_linear_rules(listener, sni):
    decision = listener.route_for_sni(sni)
    name, kind = reference(listener, sni)
    assert (decision.route.name if decision.route else None) == name
    assert decision.chain.startswith(kind)
    if kind == "sni":
        pattern = decision.chain[len("sni:"):]
        assert envoy_matches(pattern, sni.lower().rstrip("."))


def test_the_index_is_built_once_and_dropped_with_the_listener():
    listener = Listener("0.0.0.0", 2, (SniChain(("a.example.com",), Route("r", ())),))
    listener.route_for_sni("a.example.com")
    first = routing._INDEXES[id(listener)][1]
    listener.route_for_sni("b.example.com")
    assert routing._INDEXES[id(listener)][1] is first
    key = id(listener)
    del listener
    gc.collect()
    assert key not in routing._INDEXES


def test_precedence_examples_from_envoy_docs():
    """www.example.com > *.example.com > *.com > catch-all > TCP route; a wildcard needs a label."""
    def chain(name: str, *patterns: str) -> SniChain:
        return SniChain(patterns, Route(name, ()))

    listener = Listener("0.0.0.0", 3, (chain("any"), chain("com", "*.com"),
                                       chain("wild", "*.example.com"),
                                       chain("www", "www.example.com")), Route("tcp", ()))
    choose = [(sni, listener.route_for_sni(sni).route.name) for sni in (
        "www.example.com", "WWW.Example.COM.", "api.example.com", "a.b.example.com",
        "example.com", "other.com", "com", "example.org", None)]
    assert choose == [
        ("www.example.com", "www"), ("WWW.Example.COM.", "www"), ("api.example.com", "wild"),
        ("a.b.example.com", "wild"), ("example.com", "com"), ("other.com", "com"),
        ("com", "any"), ("example.org", "any"), (None, "any")]
    no_catch_all = Listener("0.0.0.0", 4, listener.tls_chains[1:], Route("tcp", ()))
    assert no_catch_all.route_for_sni("example.org").route.name == "tcp"
    assert Listener("0.0.0.0", 5, listener.tls_chains[1:]).route_for_sni("com").route is None
