"""
Choosing where a connection goes inside a route: which weighted cluster,
then which host of that cluster, by the cluster's policy
(:class:`tsgate.upstream.policy.ClusterPolicy`).

Runtime state (round-robin positions, active connection counts per host,
consecutive failures, ejections, health) is kept per cluster *name* and per
host ``address:port``, not per compiled object, so it survives a reload that
compiles an equal cluster again and a DNS refresh that returns the same
addresses.

A host is *available* when it is neither ejected by outlier detection nor
marked unhealthy by an active health check. Unavailable hosts get no new
connections, unless fewer than ``minHealthPercent`` of the hosts are
available (Istio's panic threshold: then every host is used).
"""

from __future__ import annotations

import collections
import ipaddress
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

import attrs

from tsgate.routing import Cluster, Endpoint, Route, RouteTable
from tsgate.upstream.lb import LeastRequest, Maglev, Random, RingHash, RoundRobin
from tsgate.upstream.policy import ClusterPolicy, OutlierSettings

#: Envoy's outlier detection max_ejection_time default (the cap of base × times).
MAX_EJECTION_TIME = 300.0

DEFAULT_POLICY = ClusterPolicy()


class HostState:
    """One upstream address of a cluster, and what the gateway knows about it."""

    __slots__ = (
        "address", "port", "weight", "labels", "name", "active", "total", "consecutive_failures",
        "connect_failures", "ejected", "returns_at", "times_ejected", "returned_at",
        "hc_healthy", "hc_failures", "hc_successes",
    )

    def __init__(self, address: str, port: int, weight: int = 1,
                 labels: tuple[tuple[str, str], ...] = (), name: str = "") -> None:
        self.address = address
        self.port = port
        self.weight = weight
        self.labels = labels
        #: the DNS name this address was resolved from ("" for a literal)
        self.name = name
        self.active = 0
        self.total = 0
        self.consecutive_failures = 0
        self.connect_failures = 0
        self.ejected = False
        self.returns_at = 0.0
        self.times_ejected = 0
        self.returned_at = 0.0
        self.hc_healthy = True
        self.hc_failures = 0
        self.hc_successes = 0

    @property
    def key(self) -> str:
        return f"{self.address}:{self.port}"

    def ejected_now(self, now: float) -> bool:
        if self.ejected and now >= self.returns_at:
            self.ejected = False
            self.consecutive_failures = 0
            self.returned_at = self.returns_at
        return self.ejected

    def available(self, now: float) -> bool:
        return self.hc_healthy and not self.ejected_now(now)

    def status(self, now: float) -> str:
        if self.ejected_now(now):
            return "ejected"
        return "healthy" if self.hc_healthy else "unhealthy"

    def __repr__(self) -> str:
        return f"<HostState {self.key} active={self.active}>"


@attrs.define
class ClusterState:
    """What the data path knows about one cluster at run time."""

    name: str
    next_index: int = 0
    active: int = 0
    total: int = 0
    connect_failures: int = 0
    #: (epoch, message) of recent failures, newest last.
    recent_errors: collections.deque = attrs.field(
        factory=lambda: collections.deque(maxlen=20)
    )
    #: Istio metric labels for this cluster, built once.
    metric_labels: dict[str, str] = attrs.field(factory=dict)
    #: the same labels as registry keys, one per response_flags value
    _metric_keys: dict[str, tuple[tuple[str, str], ...]] = attrs.field(factory=dict)
    #: every host ever seen, by "address:port" (state survives endpoint changes)
    hosts: dict[str, HostState] = attrs.field(factory=dict)
    #: the hosts of the current endpoint set, in endpoint order
    current: tuple[HostState, ...] = ()
    policy: ClusterPolicy = DEFAULT_POLICY
    #: what ``current`` was built from: (endpoints tuple, DNS generation, policy)
    _built_from: Any = None
    _picker: Any = None
    #: when outlier detection started (the interval grid's origin)
    started: float = 0.0
    #: until when some host may still be ejected (0: none is); hosts marked
    #: unhealthy by the health check. Both 0: every host is available (fast path).
    impaired_until: float = 0.0
    hc_down: int = 0

    #: ``cluster=<name>`` as a prebuilt stats key
    cluster_key: tuple[tuple[str, str], ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.cluster_key = (("cluster", self.name),)

    def metric_key(self, response_flags: str = "-") -> tuple[tuple[str, str], ...]:
        """Istio labels plus ``response_flags``, as a prebuilt stats key."""
        key = self._metric_keys.get(response_flags)
        if key is None:
            labels = dict(self.metric_labels, response_flags=response_flags)
            key = self._metric_keys[response_flags] = tuple(sorted(labels.items()))
        return key

    def ejected_count(self, now: float) -> int:
        return sum(1 for h in self.current if h.ejected_now(now))


def istio_metric_labels(cluster: Cluster) -> dict[str, str]:
    """Istio's standard TCP metric labels, as a gateway (reporter=source) fills them."""
    parts = cluster.host.split(".")
    namespace = parts[1] if len(parts) >= 3 and parts[2] == "svc" else "unknown"
    return {
        "reporter": "source",
        "source_workload": "tsgate",
        "source_workload_namespace": "unknown",
        "destination_service": cluster.host,
        "destination_service_name": parts[0],
        "destination_service_namespace": namespace,
        "request_protocol": "tcp",
        # Istio's source reporter says "unknown"; tsgate knows when it made
        # the upstream connection mutual TLS itself (DestinationRule tls MUTUAL).
        "connection_security_policy": (
            "mutual_tls" if getattr(cluster.tls, "mode", "") == "MUTUAL" else "unknown"),
    }


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _always(host: Any) -> bool:
    return True


def cluster_policy(cluster: Cluster) -> ClusterPolicy:
    policy = getattr(cluster, "policy", None)
    return policy if policy is not None else DEFAULT_POLICY


class Balancer:
    """
    Per-connection choices. ``choice`` is injected (a seeded
    ``random.Random().random`` in tests) so weighted picks are testable;
    ``clock`` is the reactor's ``seconds`` (ejections, intervals); ``dns``
    is a :class:`tsgate.upstream.dns.DnsRefresher` (or None: names are
    resolved at connect time only).
    """

    def __init__(self, choice: Optional[Callable[[], float]] = None,
                 clock: Callable[[], float] = time.time, dns: Any = None,
                 seed: Optional[int] = None) -> None:
        self._random = choice or random.random
        self.rng = random.Random(seed)
        self.clock = clock
        self.dns = dns
        self.clusters: dict[str, ClusterState] = {}
        #: called with (cluster state, host, event) on "ejected" and "overflow"
        self.on_event: Optional[Callable[[ClusterState, HostState, str], None]] = None
        #: runs health checks (set by the process; None in pure unit tests)
        self.reactor: Any = None
        self.checkers: dict[str, Any] = {}
        self.check_targets: dict[str, Cluster] = {}

    def state(self, cluster: Cluster) -> ClusterState:
        state = self.clusters.get(cluster.name)
        if state is None:
            state = self.clusters[cluster.name] = ClusterState(
                cluster.name, metric_labels=istio_metric_labels(cluster), started=self.clock()
            )
        return state

    def pick_cluster(self, route: Route) -> Cluster:
        """Weighted random pick per connection, as Envoy's weighted_clusters."""
        destinations = route.destinations
        if len(destinations) == 1:
            return destinations[0].cluster
        total = sum(d.weight for d in destinations)
        point = self._random() * total
        for destination in destinations:
            point -= destination.weight
            if point < 0:
                return destination.cluster
        return destinations[-1].cluster

    # -- hosts ---------------------------------------------------------------

    def hosts(self, cluster: Cluster, state: Optional[ClusterState] = None) -> \
            tuple[HostState, ...]:
        """The cluster's hosts now: its endpoints, DNS names expanded to their addresses."""
        state = state or self.state(cluster)
        policy = cluster_policy(cluster)
        dns = self.dns
        generation = dns.generation if dns is not None else 0
        built = (cluster.endpoints, generation, policy)
        if state._built_from is not None and state._built_from[0] is built[0] \
                and state._built_from[1] == generation and state._built_from[2] is policy:
            return state.current
        state.policy = policy
        current: list[HostState] = []
        endpoints: Sequence[Endpoint] = cluster.endpoints
        if policy.dns_round_robin:
            endpoints = endpoints[:1]
        for ep in endpoints:
            addresses: Sequence[str] = (ep.address,)
            name = ""
            if cluster.resolution != "STATIC" and not is_ip(ep.address) and dns is not None:
                resolved = dns.addresses(ep.address)
                if resolved:
                    addresses = resolved[:1] if policy.dns_round_robin else resolved
                    name = ep.address
            for address in addresses:
                key = f"{address}:{ep.port}"
                host = state.hosts.get(key)
                if host is None:
                    host = state.hosts[key] = HostState(address, ep.port, ep.weight,
                                                        ep.labels, name)
                host.weight, host.labels = ep.weight, ep.labels
                if host not in current:
                    current.append(host)
        hosts = tuple(current)
        if hosts != state.current or state._picker is None or state._built_from is None \
                or state._built_from[2] is not policy:
            # a new host set or policy: new tables (Maglev's cost is paid here, not per pick)
            state._picker = self._make_picker(policy, hosts)
            state._picker.uniform = len({h.weight for h in hosts}) <= 1
        state.current = hosts
        state._built_from = built
        return state.current

    def _make_picker(self, policy: ClusterPolicy, hosts: Sequence[HostState]) -> Any:
        if policy.lb == "RING_HASH":
            return RingHash(hosts, policy.ring_size)
        if policy.lb == "MAGLEV":
            return Maglev(hosts, policy.maglev_size)
        if policy.lb == "RANDOM":
            return Random(self.rng)
        if policy.lb == "ROUND_ROBIN":
            return RoundRobin()
        return LeastRequest(self.rng)

    def pick_endpoint(self, cluster: Cluster, source: Optional[str] = None,
                      exclude: Iterable[HostState] = ()) -> Optional[HostState]:
        """
        The host for a new connection from ``source`` (the client's IP, for
        consistent hashing), never one of ``exclude`` (hosts already tried);
        None when no host is available (``UH``).
        """
        state = self.state(cluster)
        hosts = self.hosts(cluster, state)
        if not hosts:
            return None
        picker = state._picker
        if state.impaired_until and self.clock() >= state.impaired_until:
            state.impaired_until = 0.0  # every ejection has ended
        if not exclude and not state.hc_down and not state.impaired_until:
            available: Sequence[HostState] = hosts  # the common case: all hosts, no copies
        else:
            available = self._available(state, hosts, exclude)
            if not available:
                return None
        if isinstance(picker, (RingHash, Maglev)):
            if source is None:
                return available[self.rng.randrange(len(available))]
            if available is hosts:
                return picker.pick(source, _always)
            allowed = set(available)
            host = picker.pick(source, allowed.__contains__)
            return host if host is not None else available[0]
        if len(available) == 1:
            return available[0]
        return picker.pick(available)

    def _available(self, state: ClusterState, hosts: Sequence[HostState],
                   exclude: Iterable[HostState]) -> list[HostState]:
        now = self.clock()
        excluded = set(exclude)
        usable = [h for h in hosts if h not in excluded]
        available = [h for h in usable if h.available(now)]
        outlier = state.policy.outlier
        if outlier is not None and outlier.min_health_percent > 0:
            healthy = sum(1 for h in hosts if h.available(now))
            if healthy * 100 < outlier.min_health_percent * len(hosts):
                return usable  # below minHealthPercent: panic, every host is used
        return available

    def set_health(self, cluster_name: str, host: HostState, healthy: bool) -> None:
        """The health check's verdict on ``host`` (counted per cluster for the fast path)."""
        host.hc_healthy = healthy
        state = self.clusters.get(cluster_name)
        if state is not None:
            state.hc_down = sum(1 for h in state.hosts.values() if not h.hc_healthy)

    # -- outcomes ------------------------------------------------------------

    @staticmethod
    def begin(host: Any) -> None:
        """A connect attempt to ``host`` starts: it counts as active until released."""
        if isinstance(host, HostState):
            host.active += 1
            host.total += 1

    @staticmethod
    def release(host: Any) -> None:
        """The connection to ``host`` ended (or its connect attempt failed)."""
        if isinstance(host, HostState):
            host.active -= 1

    def attempt_failed(self, cluster: Cluster, host: Any, tried: Sequence[Any],
                       source: Optional[str] = None) -> Optional[HostState]:
        """
        A connect attempt to ``host`` failed: release it, count the failure
        for outlier detection, and return the host of the next attempt when
        ``tsgate.io/connect-attempts`` allows one (a host not tried yet if
        any is available, else any available host), or None.
        """
        if isinstance(host, HostState):
            self.release(host)
            self.failed(cluster, host)
        attempts = cluster_policy(cluster).connect_attempts
        if len(tried) >= attempts:
            return None
        return self.pick_endpoint(cluster, source, tried) or self.pick_endpoint(cluster, source)

    def connected(self, cluster: Cluster, host: Any) -> None:
        """A connect attempt succeeded: consecutive failures start again."""
        if isinstance(host, HostState):
            host.consecutive_failures = 0

    def failed(self, cluster: Cluster, host: HostState) -> Optional[str]:
        """
        A connect attempt failed or timed out (an error for both
        consecutiveGatewayErrors and consecutive5xxErrors). Returns
        ``"ejected"`` when this failure ejected the host, ``"overflow"`` when
        maxEjectionPercent prevented it, else None.
        """
        now = self.clock()
        ejected_now = host.ejected_now(now)  # an ejection that ended resets the count first
        host.connect_failures += 1
        host.consecutive_failures += 1
        state = self.state(cluster)
        outlier = state.policy.outlier
        if outlier is None or not outlier.threshold:
            return None
        if ejected_now or host.consecutive_failures < outlier.threshold:
            return None
        ejected = state.ejected_count(now)
        total = len(state.current) or 1
        if ejected and 100.0 * (ejected + 1) / total > outlier.max_ejection_percent:
            self._event(state, host, "overflow")
            return "overflow"
        self.eject(state, host, outlier, now)
        return "ejected"

    def eject(self, state: ClusterState, host: HostState, outlier: OutlierSettings,
              now: float) -> None:
        # The multiplier decays by one per interval the host spent back in service.
        if host.times_ejected and host.returned_at:
            decay = int((now - host.returned_at) // outlier.interval)
            host.times_ejected = max(0, host.times_ejected - decay)
        host.times_ejected += 1
        period = min(outlier.base_ejection_time * host.times_ejected,
                     max(MAX_EJECTION_TIME, outlier.base_ejection_time))
        # Hosts return on the detector's interval ticks, as in Envoy.
        due = now + period
        ticks = -(-(due - state.started) // outlier.interval)
        host.ejected = True
        host.returns_at = state.started + ticks * outlier.interval
        state.impaired_until = max(state.impaired_until, host.returns_at)
        self._event(state, host, "ejected")

    def _event(self, state: ClusterState, host: HostState, event: str) -> None:
        if self.on_event is not None:
            self.on_event(state, host, event)

    # -- the table -------------------------------------------------------------

    def table_changed(self, table: RouteTable, reactor: Any = None) -> None:
        """
        A route table is in force: start the active health checks its
        clusters ask for (stopping those of clusters gone or changed) and
        start resolving its DNS names. ``reactor`` (or ``self.reactor``) runs them.
        """
        reactor = reactor or self.reactor
        clusters = sorted(table.clusters(), key=lambda c: c.name)
        for cluster in clusters:
            self.hosts(cluster)  # resolves DNS names now, not at the first connection
        if reactor is None:
            return
        from tsgate.upstream.health import ClusterChecker

        wanted = {}
        for cluster in clusters:
            hc = cluster_policy(cluster).health_check
            if hc is not None:
                wanted[cluster.name] = (hc, cluster)
        for name in list(self.checkers):
            checker = self.checkers[name]
            if name not in wanted or wanted[name][0] != checker.hc:
                checker.stop()
                del self.checkers[name]
        for name, (hc, cluster) in wanted.items():
            self.check_targets[name] = cluster
            if name not in self.checkers:
                checker = self.checkers[name] = ClusterChecker(
                    reactor, hc, self._targets(name), self._health_changed(name))
                checker.start()

    def _health_changed(self, name: str) -> Callable[[HostState, bool, str], None]:
        def changed(host: HostState, healthy: bool, why: str) -> None:
            self.set_health(name, host, healthy)

        return changed

    def _targets(self, name: str) -> Callable[[], tuple[HostState, ...]]:
        def targets() -> tuple[HostState, ...]:
            return self.hosts(self.check_targets[name])

        return targets

    def stop(self) -> None:
        for checker in self.checkers.values():
            checker.stop()
        self.checkers.clear()
        if self.dns is not None:
            self.dns.stop()

    # -- views ---------------------------------------------------------------

    def host_views(self, cluster: Cluster) -> list[dict[str, Any]]:
        """Each host's state, for ``/clusters`` and the status page."""
        state = self.state(cluster)
        now = self.clock()
        out = []
        for h in self.hosts(cluster, state):
            view: dict[str, Any] = {
                "address": h.address, "port": h.port, "weight": h.weight,
                "status": h.status(now), "active_connections": h.active,
                "total_connections": h.total, "connect_failures": h.connect_failures,
                "consecutive_failures": h.consecutive_failures,
                "times_ejected": h.times_ejected,
            }
            if h.name:
                view["resolved_from"] = h.name
            if h.ejected:
                view["ejected_for"] = round(max(0.0, h.returns_at - now), 3)
            out.append(view)
        return out


def outlier_reporter(stats: Any, error: Callable[[str], None]) -> \
        Callable[[ClusterState, HostState, str], None]:
    """A Balancer.on_event that counts Envoy's outlier_detection stats and logs ejections."""
    from twisted.logger import Logger

    log = Logger(namespace="tsgate.outlier")

    def report(state: ClusterState, host: HostState, event: str) -> None:
        key = state.cluster_key
        if event == "ejected":
            stats.inc_key("cluster.outlier_detection.ejections_enforced_total", key)
            stats.inc_key("cluster.outlier_detection.ejections_enforced_consecutive_5xx", key)
            message = (f"{state.name} {host.key}: ejected by outlier detection for "
                       f"{max(0.0, host.returns_at - time.time()):.0f}s (ejection "
                       f"{host.times_ejected}, {host.consecutive_failures} consecutive "
                       "connect failures)")
            log.warn("{message}", message=message)
            error(message)
        elif event == "overflow":
            stats.inc_key("cluster.outlier_detection.ejections_overflow", key)

    return report
