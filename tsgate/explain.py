"""
``tsgate explain``: which listener, chain, VirtualService rule and
destination a connection would get, and why every other candidate lost.

Users of an L4 gateway debug ``NR`` (no route) blind: Envoy only logs
``filter_chain_not_found``. Here the decision is replayed on the compiled
table and every candidate is given its reason ("exact simple-sni-2... does
not match", "catch-all shadowed by a more specific match").

The chosen chain is always the router's own answer
(:meth:`tsgate.routing.Listener.route_for_sni`, what the data path calls);
the per-candidate reasons are computed beside it with the same precedence
rules, and a disagreement between the two is reported rather than hidden.
:func:`short_trace` is the one-line form for the access log's route field.
"""

from __future__ import annotations

from typing import Optional

import attrs

from tsgate.routing import (
    Decision,
    Listener,
    Route,
    RouteEntry,
    RouteTable,
    SniChain,
    sni_specificity,
    trace_token,
)

_WILDCARD_BINDS = ("0.0.0.0", "::", "")

#: ``Candidate.verdict`` values.
CHOSEN = "chosen"
REJECTED = "no"


@attrs.frozen
class Candidate:
    """One chain of the listener and why it was or was not chosen."""

    match: str  # "sni:simple-sni-1.istioinaction.io", "sni:*", "tcp"
    route: Route
    verdict: str  # CHOSEN or REJECTED
    reason: str


@attrs.frozen
class Explanation:
    """The full decision for one hypothetical connection."""

    port: int
    decision: Decision
    listener: Optional[Listener] = None
    sni: Optional[str] = None
    alpn: Optional[str] = None
    source: Optional[str] = None
    bind: Optional[str] = None
    candidates: tuple[Candidate, ...] = ()
    notes: tuple[str, ...] = ()
    #: ports that do have listeners, for the "no listener" case.
    ports: tuple[int, ...] = ()

    @property
    def route(self) -> Optional[Route]:
        return self.decision.route

    def short(self) -> str:
        """One token for the access log: ``tls:<pattern>-><route>``, ``tcp-><route>``."""
        if self.listener is None:
            return "none:no-listener"
        return short_trace(self.decision)

    def lines(self) -> list[str]:
        """The human explanation, one line per item."""
        out = [f"connection: {self._connection()}"]
        if self.listener is None:
            out.append(f"listener: none on port {self.port}"
                       + (f" bound to {self.bind}" if self.bind else ""))
            out.append("result: NR (no listener: the connection would be refused)")
        else:
            out.append(f"listener: {self.listener.name} ({_listener_kind(self.listener)})")
            route = self.decision.route
            out.append(f"chain: {self.decision.chain} ({self.decision.reason})")
            if route is None:
                out.append("result: NR (no filter chain matched: closed at once, "
                           "counter listener.no_filter_chain_match)")
            else:
                out.extend(route_lines(route))
        if self.candidates:
            out.append("candidates:")
            width = max(len(c.match) for c in self.candidates)
            for c in self.candidates:
                out.append(f"  {c.verdict:<6}  {c.match:<{width}}  {c.route.name}: {c.reason}")
        if self.notes:
            out.append("notes:")
            out.extend(f"  - {note}" for note in self.notes)
        out.append(f"access log route: {self.short()}")
        return out

    def _connection(self) -> str:
        parts = [f"port {self.port}"]
        if self.bind:
            parts.append(f"bind {self.bind}")
        parts.append(f"SNI {self.sni}" if self.sni else "no SNI")
        if self.alpn:
            parts.append(f"ALPN {self.alpn}")
        if self.source:
            parts.append(f"source {self.source}")
        return ", ".join(parts)


def short_trace(decision: Decision) -> str:
    """The decision as one whitespace-free token (:func:`tsgate.routing.trace_token`)."""
    return trace_token(decision)


def _listener_kind(listener: Listener) -> str:
    protocols = ", ".join(listener.protocols) or "?"
    if listener.inspect:
        return f"inspects the TLS ClientHello; protocols {protocols}"
    return f"routes at accept without reading client bytes; protocols {protocols}"


def route_lines(route: Route) -> list[str]:
    """The route's origin, destinations with weights, and their endpoints."""
    out = [f"route: {route.name}"]
    if route.source is not None:
        out.append(f"  defined at: {route.source}")
    out.append("  destinations:")
    for d in route.destinations:
        c = d.cluster
        pct = route.percent(d)
        out.append(f"    {pct:5.1f}%  {c.name} (weight {d.weight})")
        if c.missing:
            out.append("            cluster not found (no such subset or port): "
                       "connections closed at once, NC")
        elif c.endpoints:
            eps = ", ".join(f"{e.address}:{e.port}"
                            + (f" (weight {e.weight})" if e.weight != 1 else "")
                            for e in c.endpoints)
            how = ("resolved by DNS, refreshed (--dns-refresh-rate): "
                   if c.resolution != "STATIC" else "")
            out.append(f"            endpoints ({c.resolution}): {how}{eps}")
        else:
            out.append(f"            endpoints ({c.resolution}): {c.host}:{c.port}, "
                       "resolved by DNS at connect time")
        if not c.missing:
            out.append(f"            connect timeout {c.connect_timeout:g}s, lb {c.lb_policy}"
                       + (f", max connections {c.max_connections}"
                          if c.max_connections is not None else ""))
        if c.policy is not None and not c.missing:
            # the upstream policy in force, as the data path applies it
            for text in c.policy.describe()[1:]:
                out.append(f"            {text}")
    idle = "disabled" if route.idle_timeout == 0 else f"{route.idle_timeout:g}s"
    line = f"  idle timeout {idle}"
    if route.max_connection_duration:
        line += f"; max connection duration {route.max_connection_duration:g}s"
    out.append(line)
    return out


def _pattern_kind(pattern: str) -> str:
    return "wildcard" if pattern.startswith("*") else "exact"


def _best_pattern(chain: SniChain, sni: str) -> tuple[Optional[str], int]:
    """The chain's best-matching pattern and its score (router's tie rule: first wins)."""
    best, score = None, -1
    for pattern in chain.server_names:
        s = sni_specificity(pattern, sni)
        if s is not None and s > score:
            best, score = pattern, s
    return best, score


def candidates_for(listener: Listener, sni: Optional[str]) -> tuple[Candidate, ...]:
    """
    Every chain of ``listener`` (:meth:`tsgate.routing.Listener.routes`) with
    its verdict for a connection presenting ``sni``, by Envoy's precedence:
    exact > longest wildcard > catch-all SNI chain > TCP route; among equals
    the first chain wins.
    """
    norm = sni.lower().rstrip(".") if sni is not None else None
    entries = listener.routes()
    scored: dict[int, tuple[Optional[str], int]] = {}
    winner: Optional[tuple[RouteEntry, str, int]] = None
    for i, entry in enumerate(entries):
        if entry.chain is None or not entry.chain.server_names:
            continue
        pattern, score = _best_pattern(entry.chain, norm) if norm is not None else (None, -1)
        scored[i] = (pattern, score)
        if pattern is not None and (winner is None or score > winner[2]):
            winner = (entry, pattern, score)

    out: list[Candidate] = []
    catch_all_seen = False
    chosen_any = winner is not None
    for i, entry in enumerate(entries):
        if entry.chain is None:
            if chosen_any:
                out.append(Candidate("tcp", entry.route, REJECTED,
                                     "TCP fallback not used: a TLS chain matched"))
            elif entry.fallback:
                what = f"SNI {norm}" if norm else "a connection without SNI"
                out.append(Candidate("tcp", entry.route, CHOSEN,
                                     f"no TLS chain matched {what}; TCP route is the fallback"))
            else:
                out.append(Candidate("tcp", entry.route, CHOSEN,
                                     "the listener's only chain: every connection goes here"))
            continue
        if not entry.server_names:
            if winner is not None:
                reason = f"catch-all (sniHosts *) shadowed by the more specific {winner[1]}"
                verdict = REJECTED
            elif catch_all_seen:
                reason = "a second catch-all: the first one wins"
                verdict = REJECTED
            else:
                reason = (f"catch-all took SNI {norm}" if norm
                          else "catch-all took a connection without SNI")
                verdict = CHOSEN
                chosen_any = True
            catch_all_seen = True
            out.append(Candidate("sni:*", entry.route, verdict, reason))
            continue
        pattern, score = scored[i]
        names = ", ".join(entry.server_names)
        if winner is not None and entry is winner[0]:
            kind = _pattern_kind(pattern or "")
            out.append(Candidate(f"sni:{pattern}", entry.route, CHOSEN,
                                 f"{kind} {pattern} matches {norm}"))
            continue
        match = f"sni:{names}"
        if norm is None:
            reason = "needs an SNI; the connection presented none"
        elif pattern is None:
            what = " / ".join(f"{_pattern_kind(p)} {p}" for p in entry.server_names)
            reason = f"{what} does not match {norm}"
        elif winner is not None and score == winner[2]:
            reason = f"{pattern} matches equally; the earlier chain {winner[1]} wins"
        else:
            assert winner is not None
            reason = (f"{_pattern_kind(pattern)} {pattern} matches but is less specific "
                      f"than {winner[1]}")
        out.append(Candidate(match, entry.route, REJECTED, reason))
    return tuple(out)


def _pick_listener(
    table: RouteTable, port: int, bind: Optional[str]
) -> tuple[Optional[Listener], list[str]]:
    notes: list[str] = []
    on_port = [lst for lst in table.listeners if lst.port == port]
    if bind is not None:
        exact = [lst for lst in on_port if lst.bind == bind]
        if exact:
            return exact[0], notes
        wild = [lst for lst in on_port if lst.bind in _WILDCARD_BINDS]
        if wild:
            notes.append(f"no listener bound to {bind}:{port}; {wild[0].name} "
                         f"(wildcard bind) accepts it")
            return wild[0], notes
        if on_port:
            notes.append(f"listeners on port {port} are bound to "
                         + ", ".join(lst.bind for lst in on_port) + f", not {bind}")
        return None, notes
    if len(on_port) > 1:
        notes.append(f"port {port} has {len(on_port)} listeners ("
                     + ", ".join(lst.name for lst in on_port)
                     + f"); explaining {on_port[0].name}, choose another with --bind")
    return (on_port[0] if on_port else None), notes


def explain(
    table: RouteTable,
    port: int,
    sni: Optional[str] = None,
    alpn: Optional[str] = None,
    source: Optional[str] = None,
    bind: Optional[str] = None,
) -> Explanation:
    """Explain how a connection to ``port`` presenting ``sni`` would be routed."""
    listener, notes = _pick_listener(table, port, bind)
    ports = tuple(sorted({lst.port for lst in table.listeners}))
    if listener is None:
        if ports:
            notes.append("listeners exist on ports: " + ", ".join(str(p) for p in ports))
        else:
            notes.append("the configuration has no listeners (no Gateway selected this "
                         "gateway's labels, or no VirtualService bound to its servers)")
        decision = Decision(None, "none", f"no listener on port {port}")
        return Explanation(port=port, decision=decision, sni=sni, alpn=alpn, source=source,
                           bind=bind, notes=tuple(notes), ports=ports)

    decision = listener.route_for_sni(sni)
    candidates = candidates_for(listener, sni)
    chosen = [c for c in candidates if c.verdict == CHOSEN]
    agrees = (
        (decision.route is None and not chosen)
        or (len(chosen) == 1 and chosen[0].route is decision.route
            and chosen[0].match == decision.chain)
    )
    if not agrees:
        notes.append(f"explain's candidate analysis ({chosen[0].match if chosen else 'none'}) "
                     f"disagrees with the router ({decision.chain}); the router's choice is "
                     "what the data path does; please report this")
    if listener.inspect:
        if sni is None:
            notes.append("without a ClientHello the gateway waits for the client's first bytes "
                         "until the listener-filter timeout; a server-first protocol (a banner) "
                         "stalls until then")
    elif sni is not None or alpn is not None:
        notes.append("this listener has no TLS chains, so it does not read the ClientHello: "
                     "SNI and ALPN play no part, connections are routed at accept")
    if alpn:
        notes.append(f"ALPN {alpn} is logged but does not select a chain (passthrough chains "
                     "match on SNI only, as Istio generates them)")
    if source:
        notes.append(f"source {source} does not select a chain (the table has no "
                     "source-address matches)")
    return Explanation(port=port, decision=decision, listener=listener, sni=sni, alpn=alpn,
                       source=source, bind=bind, candidates=candidates, notes=tuple(notes),
                       ports=ports)
