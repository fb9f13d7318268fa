"""
The compiled route table: what the data path consults for every connection.

This module is the contract between the configuration side (``tsgate.config``,
which turns Istio YAML into a :class:`RouteTable`) and the data path
(``tsgate.proxy``, which asks a :class:`Listener` where a connection goes).
It is pure: no Twisted, no I/O, every record frozen, so a table can be swapped
atomically on reload while old connections keep the objects they picked.

Envoy vocabulary is kept on purpose: a *listener* is one ``(bind, port)``; a
*filter chain* here is either an :class:`SniChain` (TLS passthrough, chosen
by the ClientHello's server name) or the listener's ``tcp_route`` (the chain
with no match, which is also the fallback for connections that present no
matching ClientHello); a *cluster* is ``outbound|port|subset|fqdn``.
"""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING, Any, Optional

import attrs

if TYPE_CHECKING:
    from tsgate.upstream.policy import ClusterPolicy

#: Envoy's tcp_proxy default idle timeout (1 h); 0 disables.
DEFAULT_IDLE_TIMEOUT = 3600.0
#: Istio's meshConfig.connectTimeout default.
DEFAULT_CONNECT_TIMEOUT = 10.0


@attrs.frozen
class SourceRef:
    """Where a compiled object came from, for logs, dumps and ``explain``."""

    file: str
    line: int
    resource: str  # "VirtualService default/tcp-echo-vs-from-gw"
    path: str  # "spec.tcp[0]"

    def __str__(self) -> str:
        return f"{self.resource} {self.path} ({self.file}:{self.line})"


@attrs.frozen
class Endpoint:
    """One address to connect to: an IP literal or a DNS name, and a port."""

    address: str
    port: int
    weight: int = 1
    labels: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Cluster:
    """
    An upstream service as Envoy names it: ``outbound|<port>|<subset>|<fqdn>``.

    ``resolution`` says how ``endpoints`` become socket addresses:

    - ``STATIC``: endpoints are IP literals;
    - ``DNS``: endpoint addresses are names, resolved at connect time
      (ServiceEntry ``DNS``/``DNS_ROUND_ROBIN``);
    - ``HOSTNAME``: no ServiceEntry names the host, so the destination host
      exactly as written (``tcp-echo-service``) is resolved at connect time,
      as it would be inside a Kubernetes namespace.
    """

    name: str
    host: str  # the FQDN used in the cluster name
    port: int
    subset: str = ""
    resolution: str = "STATIC"
    endpoints: tuple[Endpoint, ...] = ()
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: the load balancer in force: LEAST_REQUEST (Istio's default), ROUND_ROBIN,
    #: RANDOM, RING_HASH or MAGLEV (consistentHash.useSourceIp)
    lb_policy: str = "LEAST_REQUEST"
    max_connections: Optional[int] = None
    #: TLS origination (DestinationRule trafficPolicy.tls SIMPLE/MUTUAL): a
    #: ``tsgate.tls.client.Origination``, or None for plain TCP upstream
    tls: Any = attrs.field(default=None, eq=False)
    #: the rest of the upstream policy (tsgate.upstream.policy); None: defaults
    policy: Optional[ClusterPolicy] = None
    #: Envoy's "cluster not found": a destination whose subset no
    #: DestinationRule defines, or a port its ServiceEntry does not have.
    #: Istio admits the route and istiod names a cluster it never builds; a
    #: connection that picks it is closed at once, flagged ``NC``. Such a
    #: cluster has no endpoints.
    missing: bool = False


@attrs.frozen
class WeightedCluster:
    cluster: Cluster
    weight: int


@attrs.frozen
class Route:
    """
    Where one chain's connections go.

    ``name`` is what the access log prints as ``%ROUTE_NAME%`` and what
    ``tsgate routes`` shows: ``<vs-namespace>/<vs-name>#<tcp|tls>[<index>]``.
    Weights are relative (Istio): a destination with weight 0 never gets
    traffic and is not listed here.
    """

    name: str
    destinations: tuple[WeightedCluster, ...]
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connection_duration: Optional[float] = None
    source: Optional[SourceRef] = None

    @property
    def stat_prefix(self) -> str:
        """Envoy's tcp_proxy stat_prefix: the cluster, or ``vs.ns`` if weighted."""
        if len(self.destinations) == 1:
            return self.destinations[0].cluster.name
        return self.name

    def percent(self, destination: WeightedCluster) -> float:
        """The share of connections ``destination`` gets, in percent (0-100)."""
        total = sum(d.weight for d in self.destinations) or 1
        return 100.0 * destination.weight / total


@attrs.frozen
class SniChain:
    """
    A TLS passthrough filter chain. ``server_names`` are exact names or
    ``*.suffix`` wildcards; an empty tuple is a catch-all (``sniHosts: ["*"]``)
    that also takes connections without SNI.
    """

    server_names: tuple[str, ...]
    route: Route
    #: TLS termination (a ``protocol: TLS`` server with mode SIMPLE, MUTUAL or
    #: OPTIONAL_MUTUAL): a ``tsgate.tls.server.Termination``; None for passthrough
    termination: Any = attrs.field(default=None, eq=False)


@attrs.frozen
class Decision:
    """The outcome of choosing a chain, with the reason in words for logs."""

    route: Optional[Route]
    chain: str  # "sni:simple-sni-1.istioinaction.io", "tcp", "none"
    reason: str
    #: the chain's TLS termination, when the gateway terminates TLS for it
    termination: Any = None


_SPACES = re.compile(r"\s+")


def trace_token(decision: Decision) -> str:
    """
    The decision as one whitespace-free token, cheap enough for the data
    path to call per connection (the access log's route field):
    ``tls:simple-sni-1.istioinaction.io->default/simple-sni-1-vs#tls[0]``,
    ``tls:*->...`` (catch-all), ``tcp->...``, ``none``.
    """
    chain = decision.chain
    if chain.startswith("sni:"):
        chain = "tls:" + chain[4:]
    token = chain if decision.route is None else f"{chain}->{decision.route.name}"
    return _SPACES.sub("_", token)


def sni_specificity(pattern: str, sni: str) -> Optional[int]:
    """
    How well ``pattern`` matches ``sni``, or None if it does not.

    Envoy's order: an exact name beats every wildcard, a longer wildcard
    suffix beats a shorter one. A wildcard ``*.example.com`` matches any depth
    of labels to its left but not ``example.com`` itself.
    """
    pattern = pattern.lower()
    if not pattern.startswith("*"):
        return 1_000_000 if pattern == sni else None
    suffix = pattern[1:]  # ".example.com"
    if sni.endswith(suffix) and len(sni) > len(suffix):
        return len(suffix)
    return None


@attrs.frozen
class Listener:
    """
    One ``(bind, port)`` listening socket and its chains.

    ``inspect`` is true only when some chain needs to see the ClientHello;
    on every other listener the data path connects upstream at accept time and
    never waits for client bytes, so server-first protocols (a banner, a MySQL
    greeting) are not delayed.
    """

    bind: str
    port: int
    tls_chains: tuple[SniChain, ...] = ()
    tcp_route: Optional[Route] = None
    #: Istio protocol names of the servers on this port (TCP, TLS, MONGO, ...).
    protocols: tuple[str, ...] = ()
    #: port names of the servers on this port, for protocol selection by prefix.
    port_names: tuple[str, ...] = ()
    #: (protocol, port name) of each server on this port, in order: what
    #: Istio's protocol selection looks at, one server at a time.
    servers: tuple[tuple[str, str], ...] = ()
    #: tsgate.io/ annotations that apply to this listener.
    annotations: tuple[tuple[str, str], ...] = ()
    #: knobs settled at compile time (tsgate.config.knobs.apply) so the data
    #: path reads fields, never annotations: ``tsgate.io/inspect-timeout``
    #: (None: the --inspect-timeout option) ...
    inspect_timeout: Optional[float] = None
    #: ... and ``tsgate.io/observers`` (None: Istio's selection by port
    #: protocol and port-name prefix; ``()``: no observers)
    observer_names: Optional[tuple[str, ...]] = None
    #: (kind, namespace, name) of the Gateways whose servers make up this listener
    gateways: tuple[tuple[str, str, str], ...] = ()
    #: tsgate.authz.engine.ListenerAuthz: policies and limits; None: none apply
    authz: Optional[Any] = attrs.field(default=None, eq=False, repr=False)

    @property
    def name(self) -> str:
        return f"{self.bind}_{self.port}"

    @property
    def inspect(self) -> bool:
        return bool(self.tls_chains)

    def routes(self) -> tuple[RouteEntry, ...]:
        """
        The listener's routes, one per chain, in the order the listener
        lists them: its SNI chains, then its TCP route.
        """
        entries = [RouteEntry(self, chain.route, chain) for chain in self.tls_chains]
        if self.tcp_route is not None:
            entries.append(RouteEntry(self, self.tcp_route))
        return tuple(entries)

    def route_for_sni(self, sni: Optional[str]) -> Decision:
        """
        Choose a chain for a connection that presented ``sni`` in a ClientHello
        (None: no SNI, or not TLS at all, or the inspection timed out).

        Precedence as in Envoy: exact > longest wildcard suffix > catch-all
        SNI chain > the listener's TCP route > no route (``NR``).
        """
        if sni is not None:
            sni = sni.lower().rstrip(".")
        index = _sni_index(self)
        catch_all = index.catch_all
        if sni is not None:
            hit = index.exact.get(sni)
            if hit is None and index.wildcard:
                # Longest wildcard suffix first: "*.b.example.com" before
                # "*.example.com". Only suffixes starting at a dot can match,
                # and the wildcard needs at least one character before it.
                i = sni.find(".", 1)
                while i != -1:
                    hit = index.wildcard.get(sni[i:])
                    if hit is not None:
                        break
                    i = sni.find(".", i + 1)
            if hit is not None:
                chain, pattern = hit
                return Decision(chain.route, f"sni:{pattern}", f"SNI {sni} matched {pattern}",
                                chain.termination)
        if catch_all is not None:
            return Decision(catch_all.route, "sni:*", f"SNI {sni or '(none)'} matched catch-all",
                            catch_all.termination)
        if self.tcp_route is not None:
            return Decision(
                self.tcp_route, "tcp", f"SNI {sni or '(none)'} matched no TLS chain; TCP route"
            )
        return Decision(None, "none", f"SNI {sni or '(none)'} matched no chain")


@attrs.frozen
class RouteEntry:
    """
    One route as one chain of one listener reaches it: an SNI chain
    (``chain`` set) or the listener's TCP route (``chain`` None). What every
    rendering of the table walks (``tsgate routes``, ``explain``,
    ``/config_dump``, the admin views), so none of them walks chains itself.
    """

    listener: Listener
    route: Route
    chain: Optional[SniChain] = None

    @property
    def match(self) -> str:
        """``sni:a.example.com,*.example.com``, ``sni:*`` (catch-all) or ``tcp``."""
        if self.chain is None:
            return "tcp"
        return "sni:" + (",".join(self.chain.server_names) or "*")

    @property
    def server_names(self) -> tuple[str, ...]:
        """The SNI chain's names (empty: catch-all, or the TCP route)."""
        return () if self.chain is None else self.chain.server_names

    @property
    def termination(self) -> Any:
        """The chain's TLS termination, or None (passthrough, or the TCP route)."""
        return None if self.chain is None else self.chain.termination

    @property
    def fallback(self) -> bool:
        """The TCP route of a listener with SNI chains: what matches no chain goes here."""
        return self.chain is None and bool(self.listener.tls_chains)


class _SniIndex:
    """
    A listener's chains as lookups, built once per listener (not per
    connection): exact names and wildcard suffixes (``.example.com``) map to
    the first chain listing them, with the pattern as written.
    """

    __slots__ = ("exact", "wildcard", "catch_all", "__weakref__")

    def __init__(self, chains: tuple[SniChain, ...]) -> None:
        self.exact: dict[str, tuple[SniChain, str]] = {}
        self.wildcard: dict[str, tuple[SniChain, str]] = {}
        self.catch_all: Optional[SniChain] = None
        for chain in chains:
            if not chain.server_names:
                if self.catch_all is None:
                    self.catch_all = chain
                continue
            for pattern in chain.server_names:
                lowered = pattern.lower()
                if lowered.startswith("*"):
                    self.wildcard.setdefault(lowered[1:], (chain, pattern))
                else:
                    self.exact.setdefault(lowered, (chain, pattern))


#: id(listener) -> (weak reference to it, its index); entries leave with the listener.
_INDEXES: dict[int, tuple[weakref.ref[Listener], _SniIndex]] = {}


def _sni_index(listener: Listener) -> _SniIndex:
    """The listener's index, built on first use and kept while the listener lives."""
    key = id(listener)
    entry = _INDEXES.get(key)
    if entry is not None and entry[0]() is listener:
        return entry[1]
    index = _SniIndex(listener.tls_chains)

    def forget(_ref: object) -> None:
        _INDEXES.pop(key, None)

    _INDEXES[key] = (weakref.ref(listener, forget), index)
    return index


@attrs.frozen
class RouteTable:
    """
    All listeners of one compiled configuration, sorted by (bind, port).

    :meth:`routes` and :meth:`clusters` are the one model of the table that
    every rendering uses (the dict form is ``tsgate.config.dump.table_to_dict``).
    """

    listeners: tuple[Listener, ...] = ()

    def routes(self) -> tuple[RouteEntry, ...]:
        """Every route with the listener and chain it is reached from, listener by listener."""
        return tuple(entry for listener in self.listeners for entry in listener.routes())

    def clusters(self) -> tuple[Cluster, ...]:
        """Every cluster the routes use, once each (by name), in order of first use."""
        seen: dict[str, Cluster] = {}
        for entry in self.routes():
            for destination in entry.route.destinations:
                seen.setdefault(destination.cluster.name, destination.cluster)
        return tuple(seen.values())

    def listener(self, bind: str, port: int) -> Optional[Listener]:
        for listener in self.listeners:
            if listener.bind == bind and listener.port == port:
                return listener
        return None
