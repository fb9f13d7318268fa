"""
The compiled table's precomputed SNI lookup chooses exactly what Envoy's
rules say, checked against a plain linear reading of those rules.
"""

from __future__ import annotations

import gc
from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from tsgate import routing
from tsgate.routing import Listener, Route, SniChain, sni_specificity

LABELS = st.sampled_from(["a", "b", "example", "com", "x-y"])
NAMES = st.lists(LABELS, min_size=1, max_size=4).map(".".join)
PATTERNS = st.one_of(NAMES, NAMES.map(lambda n: "*." + n), NAMES.map(str.upper))


def reference(listener: Listener, sni: Optional[str]) -> tuple[Optional[str], str]:
    """Exact > longest wildcard suffix > first catch-all > TCP route > none, chain by chain."""
    if sni is not None:
        sni = sni.lower().rstrip(".")
    best, best_score, catch_all = None, -1, None
    for chain in listener.tls_chains:
        if not chain.server_names:
            catch_all = catch_all or chain
            continue
        for pattern in chain.server_names if sni is not None else ():
            score = sni_specificity(pattern, sni or "")
            if score is not None and score > best_score:
                best, best_score = chain, score
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
        assert sni_specificity(pattern, sni.lower().rstrip(".")) is not None


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
