"""
The model to a route table: which servers listen, which routes they take.

The steps follow istiod's gateway code (istio/istio pilot/pkg/networking/core) with the
decisions written down in docs/design.md where Istio is order-dependent:

1. Gateways whose ``selector`` is a subset of our labels are ours; their
   servers, in file order (Istio: oldest first), merge per ``(bind, port)``.
   TCP and TLS PASSTHROUGH servers on one port both compile, in either
   order (Istio drops the later TLS server after a TCP one, istio#27481);
   a second TCP server on a port is skipped, as Istio does.
2. A VirtualService binds to a server when it names the Gateway, one of its
   hosts overlaps a server host (respecting ``ns/`` host prefixes) and it is
   exported to the gateway's namespace.
3. TCP server: the first bound VirtualService with a matching ``tcp`` rule
   is the port's one TCP route. TLS server: one SNI chain per ``tls`` match;
   an SNI already used on the listener is skipped (first wins).
4. Destinations become clusters ``outbound|port|subset|fqdn`` from
   ServiceEntries (STATIC endpoints, DNS names) and DestinationRules; a host
   no ServiceEntry names is resolved by DNS exactly as written.

Nothing here raises for bad configuration: problems become diagnostics
and the affected route or chain is left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import attrs

from tsgate.config import hosts as H
from tsgate.config import knobs
from tsgate.config.diagnostics import ERROR, INFO, WARNING, Diagnostic
from tsgate.config.model import (
    Destination,
    DestinationRule,
    Gateway,
    L4Match,
    L4Route,
    Meta,
    Resource,
    Server,
    ServiceEntry,
    ServicePort,
    Subset,
    TcpSettings,
    TrafficPolicy,
    VirtualService,
    WorkloadEntry,
    WorkloadSpec,
)
from tsgate.config.validate import HTTP_FAMILY, PROTOCOLS, TLS_PROTOCOLS
from tsgate.routing import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    Cluster,
    Endpoint,
    Listener,
    Route,
    RouteTable,
    SniChain,
    SourceRef,
    WeightedCluster,
)
from tsgate.tls.checks import shared_certificate_hosts, terminates, termination_warnings
from tsgate.tls.client import build_origination
from tsgate.tls.server import TERMINATING_MODES, build_termination
from tsgate.upstream.policy import build_policy

DEFAULT_BIND = "0.0.0.0"
ANNOTATION_PREFIX = "tsgate.io/"
#: weight of a lone destination (Istio ignores its weight: it gets everything)
FULL_WEIGHT = 100
#: what the data path does when no DestinationRule sets loadBalancer.simple:
#: Istio's default, LEAST_REQUEST (see tsgate.upstream.policy)
DEFAULT_LB_POLICY: str = str(attrs.fields(Cluster).lb_policy.default)


def visible(export_to: tuple[str, ...], owner_ns: str, viewer_ns: str) -> bool:
    """Is an object of ``owner_ns`` with ``exportTo`` visible from ``viewer_ns``?"""
    if not export_to or "*" in export_to:
        return True
    if "." in export_to and owner_ns == viewer_ns:
        return True
    return viewer_ns in export_to


def gateway_key(ref: str, vs_namespace: str) -> Optional[tuple[str, str]]:
    """``name`` / ``ns/name`` / legacy ``name.ns.svc.cluster.local`` -> (ns, name)."""
    if ref == "mesh" or not ref:
        return None
    if "/" in ref:
        namespace, _, name = ref.partition("/")
        return (namespace, name)
    if "." in ref:
        parts = ref.split(".")
        return (parts[1], parts[0])
    return (vs_namespace, ref)


@attrs.define
class _ServerRef:
    gateway: Gateway
    index: int
    server: Server

    @property
    def path(self) -> str:
        return f"spec.servers[{self.index}]"

    @property
    def key(self) -> tuple[str, str]:
        return (self.gateway.meta.namespace, self.gateway.meta.name)

    @property
    def port(self) -> int:
        assert self.server.port is not None and self.server.port.number is not None
        return self.server.port.number

    def describe(self) -> str:
        return f"{self.gateway.meta.ref} {self.path}"


@attrs.define
class _Slot:
    """The servers merged onto one ``(bind, port)``."""

    bind: str
    port: int
    tcp: Optional[_ServerRef] = None
    tls: list[_ServerRef] = attrs.field(factory=list)
    auto: list[_ServerRef] = attrs.field(factory=list)
    order: list[_ServerRef] = attrs.field(factory=list)


@attrs.frozen
class _ClusterSettings:
    connect_timeout: float
    max_connections: Optional[int]
    lb_policy: str


class Compiler:
    """One compilation; holds the inputs, the caches and the diagnostics."""

    def __init__(self, resources: list[Resource], gateway_labels: Mapping[str, str],
                 gateway_namespace: Optional[str] = None,
                 credentials_dir: Optional[str] = None, tls_files_fatal: bool = True) -> None:
        self.labels = dict(gateway_labels)
        #: --credentials DIR: where credentialName certificates are read (tsgate.tls)
        self.credentials_dir = credentials_dir
        #: certificates that cannot be read (or keys that do not match) are errors
        #: for the gateway (it cannot serve them); ``tsgate validate`` reports them
        #: as warnings, since Istio's validation admits the YAML (issue 9)
        self.tls_files_fatal = tls_files_fatal
        self.gateway_namespace = gateway_namespace
        self.gateways = [r for r in resources if isinstance(r, Gateway)]
        self.virtual_services = [r for r in resources if isinstance(r, VirtualService)]
        self.service_entries = [r for r in resources if isinstance(r, ServiceEntry)]
        self.workload_entries = [r for r in resources if isinstance(r, WorkloadEntry)]
        self.destination_rules = [r for r in resources if isinstance(r, DestinationRule)]
        self.diags: list[Diagnostic] = []
        self._clusters: dict[str, Optional[Cluster]] = {}
        self._missing_clusters: dict[str, Cluster] = {}
        self._routes: dict[tuple[object, ...], Optional[Route]] = {}
        self._said: set[tuple[object, ...]] = set()
        self._bound: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------ reporting

    def report(self, severity: str, meta: Meta, path: str, message: str,
               once: Optional[tuple[object, ...]] = None, code: str = "") -> None:
        if once is not None:
            if once in self._said:
                return
            self._said.add(once)
        self.diags.append(Diagnostic(severity, message, meta.file,
                                     meta.line_of(path) if path else meta.line, meta.ref, path,
                                     code))

    # ------------------------------------------------------------- gateways

    def proxy_namespace(self, gw: Gateway) -> str:
        return self.gateway_namespace or gw.meta.namespace

    def selected(self) -> list[Gateway]:
        chosen = []
        wanted = ", ".join(f"{k}={v}" for k, v in self.labels.items()) or "(none)"
        for gw in self.gateways:
            if all(self.labels.get(k) == v for k, v in gw.selector):
                chosen.append(gw)
            else:
                selector = ", ".join(f"{k}={v}" for k, v in gw.selector)
                self.report(INFO, gw.meta, "spec.selector",
                            f"not for this gateway: selector {selector} does not match the "
                            f"gateway labels {wanted}; ignored")
        if self.gateways and not chosen:
            gw = self.gateways[0]
            self.report(WARNING, gw.meta, "spec.selector",
                        f"no Gateway selects this gateway's labels {wanted} "
                        "(set them with --gateway-label)")
        return chosen

    def slots(self, gateways: list[Gateway]) -> list[_Slot]:
        slots: dict[tuple[str, int], _Slot] = {}
        for gw in gateways:
            for i, server in enumerate(gw.servers):
                ref = _ServerRef(gw, i, server)
                kind = self.server_kind(ref)
                if kind is None:
                    continue
                key = (server.bind or DEFAULT_BIND, ref.port)
                slot = slots.setdefault(key, _Slot(*key))
                if kind == "auto":
                    slot.auto.append(ref)
                    slot.order.append(ref)
                    continue
                if kind == "tcp":
                    if slot.tcp is not None:
                        self.report(WARNING, gw.meta, ref.path,
                                    f"skipping server: port {ref.port} already has the TCP "
                                    f"server {slot.tcp.describe()} (first wins, as in Istio)")
                        continue
                    if slot.tls:
                        self.report(INFO, gw.meta, ref.path,
                                    f"TCP server on port {ref.port} after TLS servers: it takes "
                                    "connections that match no SNI chain")
                    slot.tcp = ref
                else:
                    dup = self._duplicate_tls_host(slot, server)
                    if dup is not None:
                        self.report(WARNING, gw.meta, ref.path,
                                    f"skipping server: duplicate host names with "
                                    f"{dup.describe()} on port {ref.port} (first wins)")
                        continue
                    if slot.tcp is not None and not slot.tls:
                        self.report(INFO, gw.meta, ref.path,
                                    f"TLS server on port {ref.port} after the TCP server "
                                    f"{slot.tcp.describe()}: tsgate serves both (TLS chains by "
                                    "SNI, TCP as the fallback); Istio would skip this server "
                                    "(istio#27481)")
                    slot.tls.append(ref)
                slot.order.append(ref)
        return [slots[k] for k in sorted(slots)]

    @staticmethod
    def _duplicate_tls_host(slot: _Slot, server: Server) -> Optional[_ServerRef]:
        mine = {h.lower() for h in server.hosts}
        for other in slot.tls:
            if mine & {h.lower() for h in other.server.hosts}:
                return other
        return None

    def server_kind(self, ref: _ServerRef) -> Optional[str]:
        """"tcp", "tls" or None (skipped, with a diagnostic unless validation has one)."""
        server, meta = ref.server, ref.gateway.meta
        if server.port is None or server.port.number is None or not server.port.name:
            return None
        unix = server.bind.startswith("unix://")
        if unix:
            if server.port.number != 0 or H.unix_address_error(server.bind[len("unix://"):]):
                return None  # validation reports it
        elif not 1 <= server.port.number <= 65535:
            return None
        protocol = server.port.protocol
        if protocol not in PROTOCOLS:
            return None
        if server.bind and not unix and not H.is_ip(server.bind):
            return None
        if protocol in HTTP_FAMILY:
            self.report(WARNING, meta, ref.path,
                        f"{protocol} server skipped: tsgate is a layer-4 gateway and serves "
                        "TCP and TLS passthrough servers only")
            return None
        if protocol == "UDP":
            self.report(WARNING, meta, ref.path, "UDP server skipped: tsgate proxies TCP only")
            return None
        if protocol in TLS_PROTOCOLS:
            if server.tls is None:
                return None  # validation reports it
            mode = server.tls.mode
            if mode == "PASSTHROUGH":
                return "tls"
            if mode == "AUTO_PASSTHROUGH":
                return "auto"
            if mode in TERMINATING_MODES:
                return "tls"  # terminated by tsgate.tls (see tls_chains)
            if mode == "ISTIO_MUTUAL":
                self.report(WARNING, meta, f"{ref.path}.tls.mode",
                            "ISTIO_MUTUAL needs Istio's mesh certificates, which tsgate does "
                            "not have: server skipped")
            return None
        if server.tls is not None:
            return None  # validation reports TLS settings on a TCP server
        return "tcp"

    # --------------------------------------------------- VirtualService binding

    def gateway_refs(self, vs: VirtualService, refs: tuple[str, ...]) -> set[tuple[str, str]]:
        out = set()
        for ref in refs:
            key = gateway_key(ref, vs.meta.namespace)
            if key is not None:
                out.add(key)
        return out

    def all_refs(self, vs: VirtualService) -> set[tuple[str, str]]:
        refs = set(vs.gateways)
        for rule in vs.tcp + vs.tls:
            for m in rule.match:
                refs.update(m.gateways)
        return self.gateway_refs(vs, tuple(refs))

    def check_references(self) -> None:
        # Missing Gateways (IST0101) and hosts no server has (IST0132) are reported
        # by tsgate.config.analyze, as istioctl analyze does.
        for vs in self.virtual_services:
            if not vs.gateways or vs.gateways == ("mesh",):
                self.report(INFO, vs.meta, "spec",
                            "bound to the mesh only (no spec.gateways): ignored by tsgate")

    def host_binds(self, vs: VirtualService, ref: _ServerRef) -> bool:
        gw_ns = ref.gateway.meta.namespace
        vs_hosts = [H.fqdn(h, vs.meta.namespace) for h in vs.hosts]
        for server_host in ref.server.hosts:
            namespace, slash, name = server_host.rpartition("/")
            if slash and namespace not in ("*", "") and \
                    (gw_ns if namespace == "." else namespace) != vs.meta.namespace:
                continue
            target = H.fqdn(name, gw_ns)
            if any(H.matches(target, h) for h in vs_hosts):
                return True
        return False

    def in_istio_order(self, proxy_ns: str) -> list[VirtualService]:
        """
        Istio's order for a gateway's VirtualServices: those private to the
        gateway's namespace (``exportTo: [.]``), then those exported to it by
        name, then public ones; file order within each group.
        """

        def group(vs: VirtualService) -> int:
            if not vs.export_to or "*" in vs.export_to:
                return 2
            if vs.meta.namespace == proxy_ns and "." in vs.export_to:
                return 0
            return 1

        return sorted(self.virtual_services, key=group)

    def bound(self, ref: _ServerRef) -> list[VirtualService]:
        out = []
        proxy_ns = self.proxy_namespace(ref.gateway)
        for vs in self.in_istio_order(proxy_ns):
            if ref.key not in self.all_refs(vs):
                continue
            if not visible(vs.export_to, vs.meta.namespace, proxy_ns):
                self.report(INFO, vs.meta, "spec.exportTo",
                            f"not exported to namespace {proxy_ns} of the gateway: not bound to "
                            f"{ref.gateway.meta.ref}", once=("export", vs.meta.key, ref.key))
                continue
            if not self.host_binds(vs, ref):
                continue
            self._bound.add(vs.meta.key)
            out.append(vs)
        return out

    def match_passes(self, vs: VirtualService, match: Optional[L4Match], ref: _ServerRef) -> bool:
        if match is not None and match.port is not None and match.port != ref.port:
            return False
        refs = match.gateways if match is not None and match.gateways else vs.gateways
        return ref.key in self.gateway_refs(vs, refs)

    def rule_passes(self, vs: VirtualService, rule: L4Route, ref: _ServerRef) -> bool:
        if not rule.match:
            return self.match_passes(vs, None, ref)
        return any(self.match_passes(vs, m, ref) for m in rule.match)

    # --------------------------------------------------------------- listeners

    def compile(self) -> RouteTable:
        gateways = self.selected()
        self.check_references()
        listeners = []
        for slot in self.slots(gateways):
            listener = self.listener(slot)
            if listener is not None:
                listeners.append(listener)
        self.check_match_ports()
        if not listeners and gateways and \
                (self.virtual_services or self.service_entries or self.destination_rules):
            self.diags.append(Diagnostic(
                WARNING, "no listeners: no server of a Gateway selecting this gateway ("
                + (", ".join(f"{k}={v}" for k, v in self.labels.items()) or "no labels")
                + ") has a route, so tsgate would accept no connections"))
        return RouteTable(tuple(listeners))

    def listener(self, slot: _Slot) -> Optional[Listener]:
        tcp_route = self.tcp_route(slot.tcp) if slot.tcp is not None else None
        chains = self.tls_chains(slot)
        if slot.auto:
            taken = {n for c in chains for n in c.server_names}
            chains.extend(auto_passthrough_chains(self, slot.auto, taken))
        if tcp_route is None and not chains:
            return None
        protocols: list[str] = []
        port_names: list[str] = []
        servers: list[tuple[str, str]] = []
        annotations: dict[str, tuple[str, Gateway]] = {}
        for ref in slot.order:
            port = ref.server.port
            assert port is not None
            if port.protocol not in protocols:
                protocols.append(port.protocol)
            if port.name not in port_names:
                port_names.append(port.name)
            if (port.protocol, port.name) not in servers:
                servers.append((port.protocol, port.name))
            for key, value in ref.gateway.meta.annotations:
                if not key.startswith(ANNOTATION_PREFIX):
                    continue
                if key in annotations and annotations[key][0] != value:
                    first = annotations[key][1]
                    self.report(WARNING, ref.gateway.meta, "metadata.annotations",
                                f"annotation {key}={value!r} conflicts with {first.meta.ref} "
                                f"({annotations[key][0]!r}) on listener {slot.bind}:{slot.port}; "
                                "the first is used", once=("ann", key, ref.key, slot.port))
                    continue
                annotations.setdefault(key, (value, ref.gateway))
        return knobs.apply(Listener(
            bind=slot.bind, port=slot.port, tls_chains=tuple(chains), tcp_route=tcp_route,
            protocols=tuple(protocols), port_names=tuple(port_names), servers=tuple(servers),
            annotations=tuple((k, v[0]) for k, v in annotations.items()),
            gateways=tuple(dict.fromkeys(ref.gateway.meta.key for ref in slot.order))))

    def tcp_route(self, ref: _ServerRef) -> Optional[Route]:
        chosen: Optional[tuple[VirtualService, int]] = None
        for vs in self.bound(ref):
            if vs.tls and not vs.tcp and any(self.rule_passes(vs, rule, ref)
                                             for rule in vs.tls):
                self.report(WARNING, vs.meta, "spec.tls",
                            f"tls rules are ignored on the TCP server {ref.describe()}",
                            once=("tls-on-tcp", vs.meta.key, ref.key, ref.index))
            for idx, rule in enumerate(vs.tcp):
                if not self.rule_passes(vs, rule, ref):
                    continue
                if chosen is None:
                    chosen = (vs, idx)
                elif chosen[0] is not vs:
                    first = chosen[0]
                    self.report(WARNING, vs.meta, f"spec.tcp[{idx}]",
                                f"ignored: port {ref.port} is already routed by {first.meta.ref} "
                                f"spec.tcp[{chosen[1]}] (a TCP port has one route; the first "
                                "bound VirtualService wins)")
                break
        if chosen is None:
            self.report(WARNING, ref.gateway.meta, ref.path,
                        f"no VirtualService has a tcp route for this server (port {ref.port}): "
                        "plain TCP connections to it are closed")
            return None
        vs, idx = chosen
        return self.route(vs, "tcp", idx, vs.tcp[idx], ref.port)

    def tls_chains(self, slot: _Slot) -> list[SniChain]:
        chains: list[SniChain] = []
        used: dict[str, str] = {}
        emitted: set[tuple[object, ...]] = set()
        terminated: list[tuple[_ServerRef, SniChain]] = []
        for ref in slot.tls:
            if terminates(ref.server):
                chain = self.terminating_chain(ref, slot, used)
                if chain is not None:
                    chains.append(chain)
                    terminated.append((ref, chain))
                continue
            found = False
            for vs in self.bound(ref):
                if vs.tcp and not vs.tls and any(self.rule_passes(vs, rule, ref)
                                                 for rule in vs.tcp):
                    self.report(WARNING, vs.meta, "spec.tcp",
                                f"tcp rules are ignored on the TLS PASSTHROUGH server "
                                f"{ref.describe()}; use tls rules with sniHosts (istio#40511)",
                                once=("tcp-on-tls", vs.meta.key, ref.key, ref.index))
                for idx, rule in enumerate(vs.tls):
                    if not rule.route:
                        continue
                    for j, match in enumerate(rule.match):
                        if not self.match_passes(vs, match, ref) or not match.sni_hosts:
                            continue
                        mark = (vs.meta.key, idx, j)
                        if mark in emitted:
                            found = True
                            continue
                        names = sorted({s.lower().rstrip(".") for s in match.sni_hosts
                                        if not H.partial_wildcard(s)})  # warned: skipped
                        if not names:
                            continue
                        clash = [n for n in names if n in used]
                        if clash:
                            self.report(WARNING, vs.meta, f"spec.tls[{idx}].match[{j}].sniHosts",
                                        f"duplicate SNI {clash[0]!r} on port {slot.port}: "
                                        f"already routed by {used[clash[0]]}; this match is "
                                        "skipped (first wins)")
                            continue
                        route = self.route(vs, "tls", idx, rule, ref.port)
                        if route is None:
                            continue
                        emitted.add(mark)
                        found = True
                        for n in names:
                            used[n] = route.name
                        server_names = () if "*" in names else tuple(names)
                        chains.append(SniChain(server_names, route))
            if not found:
                self.report(WARNING, ref.gateway.meta, ref.path,
                            f"no VirtualService has a tls route for this TLS server (port "
                            f"{ref.port}, hosts " + ", ".join(ref.server.hosts) + ")")
        passthrough = [n for c in chains if c.termination is None for n in c.server_names]
        for ref, chain in terminated:
            shared = shared_certificate_hosts(chain.termination, passthrough)
            if shared:
                self.report(WARNING, ref.gateway.meta, f"{ref.path}.tls",
                            "this server's certificate also covers the passthrough host(s) "
                            + ", ".join(shared) + f" on port {slot.port}: a client may reuse "
                            "one connection for the other (HTTP/2 connection coalescing), "
                            "reaching the wrong backend")
        return chains

    def check_match_ports(self) -> None:
        """A tcp/tls match on a port that no server of the named Gateways listens on."""
        ports: dict[tuple[str, str], set[int]] = {}
        for gw in self.gateways:
            ports[gw.meta.key[1:]] = {s.port.number for s in gw.servers
                                      if s.port is not None and s.port.number is not None}
        for vs in self.virtual_services:
            for kind, rules in (("tcp", vs.tcp), ("tls", vs.tls)):
                for i, rule in enumerate(rules):
                    for j, m in enumerate(rule.match):
                        if m.port is None:
                            continue
                        keys = [k for k in self.gateway_refs(vs, m.gateways or vs.gateways)
                                if k in ports]
                        if keys and not any(m.port in ports[k] for k in keys):
                            self.report(
                                WARNING, vs.meta, f"spec.{kind}[{i}].match[{j}].port",
                                "no server of gateway " + ", ".join(f"{k[0]}/{k[1]}"
                                                                     for k in sorted(keys))
                                + f" listens on port {m.port}: this match never applies")

    def terminating_chain(self, ref: _ServerRef, slot: _Slot,
                          used: dict[str, str]) -> Optional[SniChain]:
        """A server TLS-terminated by tsgate: its hosts as SNI names, the first tcp route."""
        server, meta = ref.server, ref.gateway.meta
        assert server.tls is not None and server.port is not None
        names = sorted({h.rpartition("/")[2].lower().rstrip(".") for h in server.hosts})

        def report(severity: str, field: str, message: str) -> None:
            path = f"{ref.path}.tls" + (f".{field}" if field else "")
            self.report(self.tls_severity(severity), meta, path, self.tls_message(severity,
                                                                                  message))

        # Certificates first: a missing file or a mismatched key is an error
        # whether or not a route uses the server yet.
        termination = build_termination(server.tls, names, ref.describe(),
                                        self.credentials_dir, report)
        if termination is None:
            return None
        for severity, field, message in termination_warnings(termination):
            report(severity, field, message)
        chosen: Optional[tuple[VirtualService, int]] = None
        for vs in self.bound(ref):
            for idx, rule in enumerate(vs.tcp):
                if self.rule_passes(vs, rule, ref):
                    chosen = (vs, idx)
                    break
            if chosen is not None:
                break
        if chosen is None:
            if server.port.protocol == "HTTPS":
                self.report(WARNING, meta, ref.path,
                            "HTTPS server skipped: no VirtualService routes it with tcp (tsgate "
                            "terminates TLS for tcp routes; HTTP routing is not served)")
            else:
                self.report(WARNING, meta, ref.path,
                            f"no VirtualService has a tcp route for this {server.tls.mode} TLS "
                            f"server (port {ref.port}): connections to it are closed")
            return None
        vs, idx = chosen
        route = self.route(vs, "tcp", idx, vs.tcp[idx], ref.port)
        if route is None:
            return None
        clash = [n for n in names if n in used]
        if clash:
            self.report(WARNING, meta, f"{ref.path}.hosts",
                        f"duplicate SNI {clash[0]!r} on port {slot.port}: already routed by "
                        f"{used[clash[0]]}; this server is skipped (first wins)")
            return None
        for n in names:
            used[n] = f"{ref.describe()} ({server.tls.mode})"
        return SniChain(() if "*" in names else tuple(names), route, termination)

    # ------------------------------------------------------------------ routes

    def route(self, vs: VirtualService, kind: str, idx: int, rule: L4Route,
              listener_port: int) -> Optional[Route]:
        key = (vs.meta.key, kind, idx, listener_port)
        if key in self._routes:
            return self._routes[key]
        path = f"spec.{kind}[{idx}]"
        weighted: list[WeightedCluster] = []
        lone = len(rule.route) == 1
        first_policy: Optional[TrafficPolicy] = None
        for i, rd in enumerate(rule.route):
            cluster, policy = self.cluster(vs, rd.destination, f"{path}.route[{i}].destination",
                                           listener_port)
            if i == 0:
                first_policy = policy
            weight = FULL_WEIGHT if lone else (rd.weight or 0)
            if cluster is not None and weight > 0:
                weighted.append(WeightedCluster(cluster, weight))
        if not weighted:
            self._routes[key] = None
            return None
        tcp = first_policy.tcp if first_policy is not None else None
        idle = DEFAULT_IDLE_TIMEOUT
        duration = None
        if tcp is not None:
            idle = tcp.idle_timeout if tcp.idle_timeout is not None else DEFAULT_IDLE_TIMEOUT
            duration = tcp.max_connection_duration
        route = Route(
            name=f"{vs.meta.namespace}/{vs.meta.name}#{kind}[{idx}]",
            destinations=tuple(weighted), idle_timeout=idle, max_connection_duration=duration,
            source=SourceRef(vs.meta.file, vs.meta.line_of(path), vs.meta.ref, path))
        self._routes[key] = route
        return route

    # ---------------------------------------------------------------- clusters

    def service_entry(self, fqdn: str, viewer_ns: str) -> Optional[tuple[ServiceEntry, str]]:
        """The ServiceEntry naming ``fqdn`` (exact first, then longest wildcard) and its host."""
        best: Optional[tuple[ServiceEntry, str]] = None
        best_len = -1
        for se in self.service_entries:
            if not visible(se.export_to, se.meta.namespace, viewer_ns):
                continue
            for host in se.hosts:
                full = H.fqdn(host, se.meta.namespace)
                if full == fqdn:
                    return (se, host)
                if full.startswith("*.") and fqdn.endswith(full[1:]) and len(full) > best_len:
                    best, best_len = (se, host), len(full)
        return best

    def destination_rule(self, fqdn: str, viewer_ns: str,
                         meta: Meta, path: str) -> Optional[DestinationRule]:
        exact = []
        wild: list[tuple[int, DestinationRule]] = []
        for dr in self.destination_rules:
            if not dr.host or not visible(dr.export_to, dr.meta.namespace, viewer_ns):
                continue
            if dr.workload_selector is not None and \
                    any(self.labels.get(k) != v for k, v in dr.workload_selector):
                self.report(INFO, dr.meta, "spec.workloadSelector",
                            "workloadSelector does not select this gateway: not applied",
                            once=("dr-sel", dr.meta.key))
                continue
            full = H.fqdn(dr.host, dr.meta.namespace)
            if full == fqdn:
                exact.append(dr)
            elif H.subset_of(fqdn, full):
                wild.append((len(full), dr))
        if len(exact) > 1:
            self.report(WARNING, exact[1].meta, "spec.host",
                        f"another DestinationRule for host {fqdn} comes first "
                        f"({exact[0].meta.ref}); this one is not used",
                        once=("dr-dup", exact[1].meta.key))
        if exact:
            return exact[0]
        if wild:
            return max(wild, key=lambda t: t[0])[1]
        return None

    def cluster(self, vs: VirtualService, dest: Destination, path: str,
                listener_port: int) -> tuple[Optional[Cluster], Optional[TrafficPolicy]]:
        """The cluster of one destination and the DestinationRule's top-level policy."""
        if not dest.host or dest.host == "*":
            return None, None
        viewer = self.gateway_namespace or vs.meta.namespace
        fqdn = H.fqdn(dest.host, vs.meta.namespace)
        found = self.service_entry(fqdn, viewer)
        se_port: Optional[ServicePort] = None
        port = dest.port
        if found is not None:
            se, _ = found
            if port is None:
                port = se.ports[0].number if len(se.ports) == 1 else listener_port
            se_port = next((p for p in se.ports if p.number == port), None)
            if se_port is None:
                assert port is not None  # validation: every ServicePort has a number
                ports = ", ".join(str(p.number) for p in se.ports) or "none"
                if dest.port:
                    # istioctl analyze's DestinationHostAnalyzer (IST0101)
                    said = f'Referenced host:port not found: "{dest.host}:{port}"'
                    code = "IST0101"
                else:
                    # IST0112: no port given and the service has several
                    said = (f"no destination port and {se.meta.ref} (host {fqdn}) has several "
                            f"ports: the listener port {port} is used, which it does not have")
                    code = "IST0112"
                return self._missing(vs, f"{path}.port" if dest.port else path, fqdn, port,
                                     dest.subset,
                                     f"{said} ({se.meta.ref} ports: {ports})", code), None
        elif port is None:
            port = listener_port
        assert port is not None
        dr = self.destination_rule(fqdn, viewer, vs.meta, path)
        subset: Optional[Subset] = None
        if dest.subset:
            subset = None if dr is None else \
                next((s for s in dr.subsets if s.name == dest.subset), None)
            if subset is None:
                where = f"no DestinationRule for host {fqdn}" if dr is None else \
                    f"{dr.meta.ref} has subsets: " + (
                        ", ".join(s.name for s in dr.subsets) or "none")
                return self._missing(
                    vs, f"{path}.subset", fqdn, port, dest.subset,
                    f'Referenced host+subset in destinationrule not found: '
                    f'"{fqdn}+{dest.subset}" ({where})', "IST0101"), \
                    dr.traffic_policy if dr else None
        # Route-level settings (idleTimeout, maxConnectionDuration) come from the
        # DestinationRule's top-level policy, as istiod builds tcp_proxy; cluster
        # settings honour portLevelSettings and the subset's overrides.
        top = dr.traffic_policy if dr else None
        policy = _merge(_for_port(top, port),
                        _for_port(subset.traffic_policy if subset else None, port))
        name = f"outbound|{port}|{dest.subset}|{fqdn}"
        if name in self._clusters:
            return self._clusters[name], top
        cluster = self._build_cluster(vs, dest, path, fqdn, port, found, se_port, subset, policy,
                                      dr)
        self._clusters[name] = cluster
        return cluster, top

    def _missing(self, vs: VirtualService, path: str, fqdn: str, port: int, subset: str,
                 said: str, code: str) -> Cluster:
        """
        The cluster istiod names but never builds (Istio admits the route):
        a warning, and a cluster whose connections are closed at once (NC).
        """
        name = f"outbound|{port}|{subset}|{fqdn}"
        self.report(WARNING, vs.meta, path,
                    f"{said}; the route is served, but cluster {name} does not exist: a "
                    "connection routed to it is closed at once (NC), as Envoy does",
                    once=("missing", vs.meta.key, path, name), code=code)
        cluster = self._missing_clusters.get(name)
        if cluster is None:
            cluster = Cluster(name=name, host=fqdn, port=port, subset=subset, missing=True)
            self._missing_clusters[name] = cluster
        return cluster

    def _build_cluster(self, vs: VirtualService, dest: Destination, path: str, fqdn: str,
                       port: int, found: Optional[tuple[ServiceEntry, str]],
                       se_port: Optional[ServicePort], subset: Optional[Subset],
                       policy: Optional[TrafficPolicy],
                       dr: Optional[DestinationRule] = None) -> Optional[Cluster]:
        name = f"outbound|{port}|{dest.subset}|{fqdn}"
        tcp = policy.tcp if policy is not None else None
        annotations = dr.meta.annotations if dr is not None else ()
        upstream = build_policy(policy, annotations, found[0].resolution if found else "")
        settings = _ClusterSettings(
            connect_timeout=(tcp.connect_timeout if tcp is not None and tcp.connect_timeout
                             is not None else DEFAULT_CONNECT_TIMEOUT),
            max_connections=tcp.max_connections if tcp is not None else None,
            lb_policy=upstream.lb,
        )

        def make(resolution: str, endpoints: tuple[Endpoint, ...]) -> Cluster:
            return Cluster(name=name, host=fqdn, port=port, subset=dest.subset,
                           resolution=resolution, endpoints=endpoints,
                           connect_timeout=settings.connect_timeout,
                           lb_policy=settings.lb_policy,
                           max_connections=settings.max_connections,
                           tls=self.origination(policy, dr, fqdn, port, dest.subset),
                           policy=upstream)

        if found is None:
            how = "as written (an IP address)" if H.is_ip(dest.host) else \
                "resolved by DNS as written"
            self.report(INFO, vs.meta, f"{path}.host",
                        f"no ServiceEntry names host {fqdn}: connecting to {dest.host!r} "
                        f"port {port} {how}",
                        once=("hostname", vs.meta.key, dest.host, port))
            return make("HOSTNAME", (Endpoint(dest.host, port),))
        se, se_host = found
        assert se_port is not None
        if se.resolution in ("NONE", "DYNAMIC_DNS"):
            why = ("forwards to the connection's original destination address, which an "
                   "ingress gateway does not have" if se.resolution == "NONE"
                   else "resolves the HTTP Host or SNI per request, not usable for TCP")
            self.report(ERROR, vs.meta, f"{path}.host",
                        f"{se.meta.ref} has resolution {se.resolution}, which {why}; use "
                        "STATIC endpoints or DNS")
            return None
        workloads = self._workloads(se)
        labels = dict(subset.labels) if subset is not None else {}
        endpoints = []
        for w in workloads:
            wl = dict(w.labels)
            if any(wl.get(k) != v for k, v in labels.items()):
                continue
            if not w.address:
                self.report(WARNING, se.meta, "spec.endpoints",
                            f"endpoint without an address (network {w.network!r}) skipped: "
                            "tsgate has nothing to connect to",
                            once=("noaddr", se.meta.key, w.network))
                continue
            if w.address.startswith("unix://"):
                self.report(WARNING, se.meta, "spec.endpoints",
                            f"unix endpoint {w.address} skipped: tsgate connects over TCP",
                            once=("unix", se.meta.key, w.address))
                continue
            ports = dict(w.ports)
            target = ports.get(se_port.name) or se_port.target_port or port
            endpoints.append(Endpoint(w.address, target, w.weight if w.weight else 1,
                                      w.labels))
        resolution = "STATIC" if se.resolution == "STATIC" else "DNS"
        if resolution == "DNS" and not workloads:
            endpoints.append(Endpoint(se_host if not se_host.startswith("*") else fqdn,
                                      se_port.target_port or port))
        if not endpoints:
            self.report(WARNING, vs.meta, path,
                        f"cluster {name} has no endpoints"
                        + (f" with the labels of subset {dest.subset!r}" if subset else "")
                        + ": connections to it fail (UH)", once=("noep", name))
        return make(resolution, tuple(endpoints))

    def tls_severity(self, severity: str) -> str:
        return ERROR if severity == "error" and self.tls_files_fatal else WARNING

    def tls_message(self, severity: str, message: str) -> str:
        if severity == "error" and not self.tls_files_fatal:
            return message + " (Istio admits the YAML; tsgate would not serve this, and the " \
                "gateway refuses to start with it)"
        return message

    def origination(self, policy: Optional[TrafficPolicy], dr: Optional[DestinationRule],
                    fqdn: str, port: int, subset: str) -> Any:
        """TLS origination for a cluster (DestinationRule tls SIMPLE/MUTUAL), or None."""
        if policy is None or policy.tls is None or policy.tls.mode not in ("SIMPLE", "MUTUAL") \
                or dr is None:
            return None
        path = _tls_path(dr, policy.tls, port, subset)

        def report(severity: str, field: str, message: str) -> None:
            assert dr is not None
            self.report(self.tls_severity(severity), dr.meta,
                        path + (f".{field}" if field else ""),
                        self.tls_message(severity, message),
                        once=("orig", dr.meta.key, path, field, message))

        return build_origination(policy.tls, fqdn, self.credentials_dir, report)

    def _workloads(self, se: ServiceEntry) -> list[WorkloadSpec]:
        if se.endpoints or se.workload_selector is None:
            return list(se.endpoints)
        selector = dict(se.workload_selector)
        return [we.spec for we in self.workload_entries
                if we.meta.namespace == se.meta.namespace
                and all(dict(we.spec.labels).get(k) == v for k, v in selector.items())]


def _for_port(policy: Optional[TrafficPolicy], port: int) -> Optional[TrafficPolicy]:
    """portLevelSettings for ``port`` replace the policy's settings (no inheritance)."""
    if policy is None:
        return None
    for number, level in policy.port_level:
        if number == port:
            return level
    return policy


def _merge(base: Optional[TrafficPolicy], override: Optional[TrafficPolicy]) -> \
        Optional[TrafficPolicy]:
    """A subset's policy overrides the DestinationRule's field by field."""
    if override is None:
        return base
    if base is None:
        return override
    tcp: Optional[TcpSettings] = override.tcp if override.tcp is not None else base.tcp
    lb_set = override.lb_simple is not None or bool(override.consistent_hash) \
        or "loadBalancer" in override.set_fields
    return attrs.evolve(
        base, tcp=tcp, tls_mode=override.tls_mode or base.tls_mode,
        tls=override.tls or base.tls,
        lb_simple=override.lb_simple if lb_set else base.lb_simple,
        consistent_hash=override.consistent_hash if lb_set else base.consistent_hash,
        consistent_hash_settings=(override.consistent_hash_settings if lb_set
                                  else base.consistent_hash_settings),
        use_source_ip=override.use_source_ip if lb_set else base.use_source_ip,
        proxy_protocol=(override.proxy_protocol if "proxyProtocol" in override.set_fields
                        else base.proxy_protocol),
        outlier_detection=(override.outlier_detection if "outlierDetection"
                           in override.set_fields else base.outlier_detection))


def auto_passthrough_chains(compiler: Compiler, refs: list[_ServerRef],
                            taken: set[str]) -> list[SniChain]:
    """Hook for :mod:`tsgate.config.auto_passthrough` (kept there, see its docstring)."""
    from tsgate.config.auto_passthrough import chains

    return chains(compiler, refs, taken)


def _tls_path(dr: DestinationRule, tls: Any, port: int, subset: str) -> str:
    """Where in ``dr`` the ClientTLS settings ``tls`` were written."""
    candidates: list[tuple[str, Optional[TrafficPolicy]]] = []
    for j, s in enumerate(dr.subsets):
        if s.name == subset:
            candidates.append((f"spec.subsets[{j}].trafficPolicy", s.traffic_policy))
    candidates.append(("spec.trafficPolicy", dr.traffic_policy))
    for base, policy in candidates:
        if policy is None:
            continue
        for i, (number, level) in enumerate(policy.port_level):
            if number == port and level.tls is tls:
                return f"{base}.portLevelSettings[{i}].tls"
        if policy.tls is tls:
            return f"{base}.tls"
    return "spec.trafficPolicy.tls"


def compile_table(resources: list[Resource], gateway_labels: Mapping[str, str],
                  gateway_namespace: Optional[str] = None,
                  credentials_dir: Optional[str] = None,
                  others: Sequence[Mapping[str, Any]] = (),
                  tls_files_fatal: bool = True) -> tuple[RouteTable, list[Diagnostic]]:
    """
    The route table of ``resources`` for a gateway with ``gateway_labels``;
    ``credentials_dir`` is ``--credentials DIR``; ``others`` are the non-Istio
    objects loaded with them (Pods, Kubernetes Gateways), which istioctl
    analyze's checks look at.
    """
    compiler = Compiler(resources, gateway_labels, gateway_namespace, credentials_dir,
                        tls_files_fatal)
    table = compiler.compile()
    from tsgate.config.analyze import analyze

    return table, compiler.diags + analyze(resources, compiler._bound, gateway_labels, others)
