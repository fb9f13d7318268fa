"""
The balancer's side of the process (tsgate/upstream/balancer.py): the health
checks a route table asks for (started, kept, replaced, stopped, their
verdicts taking hosts out of the pick), ``/clusters``' host views, and the
outlier reporter (Envoy's ``outlier_detection`` stats and the ejection log
line). Unit logic on a MemoryReactorClock. Each test names the mutants of
``mutmut`` it was written to kill.
"""

from __future__ import annotations

import time
from typing import Any, cast

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from tests.upstream.test_balancer import Clock, cluster
from tsgate.routing import Cluster, Endpoint
from tsgate.upstream.balancer import Balancer, ClusterState, HostState, outlier_reporter
from tsgate.upstream.policy import ClusterPolicy, HealthCheck, OutlierSettings


class Table:
    def __init__(self, *clusters: Cluster) -> None:
        self._clusters = clusters

    def clusters(self) -> tuple[Cluster, ...]:
        return self._clusters


def checked(name: str, hc: HealthCheck, n: int = 2) -> Cluster:
    return cluster(n, name=name, health_check=hc)


def test_table_starts_keeps_replaces_and_stops_health_checks() -> None:
    """Kills table_changed mutants (wanted checks, kept when equal, replaced, stopped) and stop."""
    reactor = MemoryReactorClock()
    b = Balancer(seed=1)
    hc = HealthCheck(interval=10.0)
    a, plain = checked("a", hc), cluster(2, name="plain")
    b.table_changed(cast(Any, Table(plain, a)), reactor)
    assert sorted(b.checkers) == ["a"]
    assert [(h, p) for h, p, *_ in reactor.tcpClients] == [("10.0.0.1", 80), ("10.0.0.2", 80)]
    first = b.checkers["a"]
    b.table_changed(cast(Any, Table(a, plain)), reactor)  # the same check: kept, not restarted
    assert b.checkers["a"] is first and len(reactor.tcpClients) == 2
    b.table_changed(cast(Any, Table(checked("a", HealthCheck(interval=5.0)))), reactor)
    assert first.stopped and b.checkers["a"] is not first
    assert len(reactor.tcpClients) == 4
    second = b.checkers["a"]
    b.table_changed(cast(Any, Table(plain)), reactor)
    assert second.stopped and b.checkers == {}
    b.table_changed(cast(Any, Table(a)), reactor)
    third = b.checkers["a"]
    b.stop()
    assert third.stopped and b.checkers == {}


def test_table_uses_the_balancers_reactor_or_none() -> None:
    """Kills table_changed mutants of ``reactor or self.reactor`` and the no-reactor return."""
    b = Balancer(seed=1)
    a = checked("a", HealthCheck())
    b.table_changed(cast(Any, Table(a)))
    assert b.checkers == {} and [h.address for h in b.clusters["a"].current] == [
        "10.0.0.1", "10.0.0.2"]  # hosts built at once all the same
    b.reactor = MemoryReactorClock()
    b.table_changed(cast(Any, Table(a)))
    assert list(b.checkers) == ["a"] and len(b.reactor.tcpClients) == 2


def test_a_failed_health_check_takes_the_host_out_of_the_pick() -> None:
    """Kills _health_changed/_targets/set_health mutants (the verdict reaches the cluster)."""
    reactor = MemoryReactorClock()
    b = Balancer(seed=1)
    a = checked("a", HealthCheck(unhealthy_threshold=1), n=2)
    b.table_changed(cast(Any, Table(a)), reactor)
    reactor.tcpClients[0][2].clientConnectionFailed(reactor.connectors[0],
                                                    Failure(ConnectionRefusedError()))
    state = b.clusters["a"]
    assert state.hc_down == 1
    assert {b.pick_endpoint(a).address for _ in range(6)} == {"10.0.0.2"}  # type: ignore
    assert [v["status"] for v in b.host_views(a)] == ["unhealthy", "healthy"]
    b.set_health("a", state.current[0], True)
    assert state.hc_down == 0
    b.set_health("gone", state.current[0], False)  # an unknown cluster: the host only
    assert state.current[0].hc_healthy is False


class Dns:
    generation = 1

    def addresses(self, name: str) -> tuple[str, ...]:
        return ("10.1.0.1", "10.1.0.2") if name == "db.example" else ()

    def stop(self) -> None:
        self.stopped = True


def test_host_views() -> None:
    """Kills host_views and HostState.__init__ mutants (every field, resolved_from, ejected_for)."""
    clock = Clock()
    dns = Dns()
    b = Balancer(clock=clock, dns=dns, seed=1)
    c = Cluster(name="d", host="h", port=5432, resolution="DNS",
                endpoints=(Endpoint("db.example", 5432, 3), Endpoint("10.2.0.1", 5432, 1)),
                policy=ClusterPolicy(outlier=OutlierSettings(consecutive_5xx_errors=1,
                                                             max_ejection_percent=100)))
    first = b.pick_endpoint(c)
    assert first is not None
    b.begin(first)
    host = b.clusters["d"].current[0]
    b.failed(c, host)
    views = b.host_views(c)
    assert views[0] == {
        "address": "10.1.0.1", "port": 5432, "weight": 3, "status": "ejected",
        "active_connections": 1 if first is host else 0,
        "total_connections": 1 if first is host else 0, "connect_failures": 1,
        "consecutive_failures": 1, "times_ejected": 1, "resolved_from": "db.example",
        "ejected_for": views[0]["ejected_for"]}
    assert 30.0 <= views[0]["ejected_for"] <= 40.0
    assert views[2] == {
        "address": "10.2.0.1", "port": 5432, "weight": 1, "status": "healthy",
        "active_connections": 1 if first is views_host(b, 2) else 0,
        "total_connections": 1 if first is views_host(b, 2) else 0, "connect_failures": 0,
        "consecutive_failures": 0, "times_ejected": 0}
    b.stop()
    assert dns.stopped


def views_host(b: Balancer, i: int) -> HostState:
    return b.clusters["d"].current[i]


class Stats:
    def __init__(self) -> None:
        self.counted: list[tuple[str, Any]] = []

    def inc_key(self, name: str, key: Any) -> None:
        self.counted.append((name, key))


def test_outlier_reporter_counts_and_logs() -> None:
    """Kills outlier_reporter mutants (Envoy's stat names, the cluster key, the message)."""
    stats, errors, lines = Stats(), [], []  # type: ignore[var-annotated]

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "tsgate.outlier":
            lines.append(formatEvent(event))

    report = outlier_reporter(stats, errors.append)
    state = ClusterState(name="outbound|80||db")
    host = HostState("10.0.0.9", 80)
    host.times_ejected, host.consecutive_failures = 2, 5
    host.returns_at = time.time() + 100.2
    globalLogPublisher.addObserver(cast(Any, observe))
    try:
        report(state, host, "ejected")
        host.returns_at = 0.0
        report(state, host, "ejected")
    finally:
        globalLogPublisher.removeObserver(cast(Any, observe))
    key = (("cluster", "outbound|80||db"),)
    assert stats.counted == [
        ("cluster.outlier_detection.ejections_enforced_total", key),
        ("cluster.outlier_detection.ejections_enforced_consecutive_5xx", key)] * 2
    assert errors == [
        "outbound|80||db 10.0.0.9:80: ejected by outlier detection for 100s (ejection 2, "
        "5 consecutive connect failures)",
        "outbound|80||db 10.0.0.9:80: ejected by outlier detection for 0s (ejection 2, "
        "5 consecutive connect failures)"]
    assert lines == errors
    stats.counted.clear()
    report(state, host, "overflow")
    assert stats.counted == [("cluster.outlier_detection.ejections_overflow", key)]
    report(state, host, "returned")
    assert len(stats.counted) == 1
    assert len(errors) == 2


def test_a_new_host_starts_clean() -> None:
    """Kills HostState.__init__ mutants (each counter 0, not ejected, no name, weight/labels)."""
    h = HostState("10.0.0.1", 80)
    assert (h.weight, h.labels, h.name) == (1, (), "")
    assert (h.active, h.total, h.consecutive_failures, h.connect_failures) == (0, 0, 0, 0)
    assert h.ejected is False and h.returns_at == 0.0 and h.returned_at == 0.0
    assert h.times_ejected == 0 and h.hc_healthy is True
    assert h.hc_failures == 0 and h.hc_successes == 0
    labelled = HostState("10.0.0.2", 81, 4, (("v", "1"),), "db.example")
    assert (labelled.weight, labelled.labels, labelled.name) == (4, (("v", "1"),), "db.example")
    assert labelled.status(0.0) == "healthy"


def test_begin_counts_every_attempt() -> None:
    """Kills Balancer.begin 1/4-6 (active and total count up by one each)."""
    h = HostState("10.0.0.1", 80)
    Balancer.begin(h)
    Balancer.begin(h)
    assert (h.active, h.total) == (2, 2)
    Balancer.release(h)
    assert (h.active, h.total) == (1, 2)


def test_outlier_events_reach_the_reporter() -> None:
    """Kills _event 2-7, failed 4-6/30-37, eject 43-50 (the state, host and event passed on)."""
    clock = Clock()
    b = Balancer(clock=clock, seed=1)
    events: list[tuple[ClusterState, HostState, str]] = []
    b.on_event = lambda state, host, event: events.append((state, host, event))
    c = cluster(4, outlier=OutlierSettings(consecutive_5xx_errors=2, max_ejection_percent=25))
    b.pick_endpoint(c)
    state = b.clusters["c"]
    first, second = state.current[0], state.current[1]
    assert b.failed(c, first) is None
    assert b.failed(c, first) == "ejected"
    assert first.connect_failures == 2
    b.failed(c, second)
    assert b.failed(c, second) == "overflow"  # a second ejection would be 50% > 25%
    assert events == [(state, first, "ejected"), (state, second, "overflow")]


def test_mutual_tls_clusters_are_labelled_so() -> None:
    """Kills istio_metric_labels 42-57 (connection_security_policy mutual_tls for tls MUTUAL)."""
    from types import SimpleNamespace

    from tsgate.upstream.balancer import istio_metric_labels

    mutual = Cluster(name="m", host="db.prod.svc.cluster.local", port=5432,
                     tls=SimpleNamespace(mode="MUTUAL"))
    labels = istio_metric_labels(mutual)
    assert labels["connection_security_policy"] == "mutual_tls"
    assert labels["destination_service_namespace"] == "prod"
    simple = Cluster(name="s", host="db", port=5432, tls=SimpleNamespace(mode="SIMPLE"))
    assert istio_metric_labels(simple)["connection_security_policy"] == "unknown"
    assert istio_metric_labels(Cluster(name="n", host="db", port=1))[
        "connection_security_policy"] == "unknown"


def test_dns_round_robin_takes_only_the_first_endpoint() -> None:
    """Kills hosts 28 (DNS_ROUND_ROBIN: one endpoint, its first address)."""
    b = Balancer(dns=Dns(), seed=1)
    c = Cluster(name="r", host="h", port=5432, resolution="DNS",
                endpoints=(Endpoint("db.example", 5432), Endpoint("10.3.0.1", 5432)),
                policy=ClusterPolicy(dns_round_robin=True))
    assert [h.key for h in b.hosts(c)] == ["10.1.0.1:5432"]
    static = Cluster(name="s", host="h", port=5432, resolution="STATIC",
                     endpoints=(Endpoint("db.example", 5432),))
    assert [(h.key, h.name) for h in b.hosts(static)] == [("db.example:5432", "")]


def test_ejected_for_is_rounded_to_milliseconds() -> None:
    """Kills host_views 36/38/43/45 (round to 3 digits; what is left, under a second too)."""
    clock = Clock()
    b = Balancer(clock=clock, seed=1)
    c = cluster(2, outlier=OutlierSettings(consecutive_5xx_errors=1, max_ejection_percent=100))
    b.pick_endpoint(c)
    host = b.clusters["c"].current[0]
    b.failed(c, host)
    clock.now = host.returns_at - 12.3456789
    assert b.host_views(c)[0]["ejected_for"] == 12.346
    clock.now = host.returns_at - 0.25
    assert b.host_views(c)[0]["ejected_for"] == 0.25


def test_a_host_back_to_health_is_picked_again() -> None:
    """Kills _health_changed 3 (the checker's verdict, healthy again, reaches the balancer)."""
    reactor = MemoryReactorClock()
    b = Balancer(seed=1)
    a = checked("a", HealthCheck(unhealthy_threshold=1, healthy_threshold=1, interval=10.0))
    b.table_changed(cast(Any, Table(a)), reactor)
    reactor.tcpClients[0][2].clientConnectionFailed(reactor.connectors[0],
                                                    Failure(ConnectionRefusedError()))
    assert b.host_views(a)[0]["status"] == "unhealthy"
    reactor.advance(10.0)
    probe: Any = reactor.tcpClients[2][2].buildProtocol(None)
    probe.makeConnection(StringTransport())
    assert b.host_views(a)[0]["status"] == "healthy"
    assert b.clusters["a"].hc_down == 1  # 10.0.0.2's first check timed out meanwhile
    assert {b.pick_endpoint(a).address for _ in range(20)} == {"10.0.0.1"}  # type: ignore


def test_a_retry_goes_to_a_tried_host_when_none_is_left() -> None:
    """Kills attempt_failed 16-19 (the fallback pick: same cluster, same client address)."""
    b = Balancer(seed=1)
    c = cluster(3, lb="RING_HASH", hash_source_ip=True, connect_attempts=5)
    state_hosts = b.hosts(c)
    for source in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"):
        expected = b.pick_endpoint(c, source)
        assert b.attempt_failed(c, None, state_hosts, source) is expected


def test_random_ignores_the_load_and_the_seed_repeats() -> None:
    """Kills _make_picker 16/17 (RANDOM is not least-request) and Balancer.__init__ 4 (seed)."""
    def run(seed: int) -> list[str]:
        b = Balancer(seed=seed)
        c = cluster(2, lb="RANDOM")
        b.hosts(c)[0].active = 100  # least request would never pick it
        return [b.pick_endpoint(c).address for _ in range(40)]  # type: ignore[union-attr]

    first = run(7)
    assert set(first) == {"10.0.0.1", "10.0.0.2"}
    assert run(7) == first


def test_the_ejection_multiplier_decays_while_back_in_service() -> None:
    """Kills HostState.ejected_now 7 and eject 11/12 (Envoy: the multiplier decays per interval)."""
    clock = Clock()
    b = Balancer(clock=clock, seed=1)
    c = cluster(2, outlier=OutlierSettings(consecutive_5xx_errors=1, interval=10.0,
                                           base_ejection_time=30.0, max_ejection_percent=100))
    b.pick_endpoint(c)
    host = b.clusters["c"].current[0]
    b.failed(c, host)
    clock.now = host.returns_at
    assert host.status(clock.now) == "healthy"
    b.failed(c, host)  # at once again: the second ejection is twice as long
    assert host.times_ejected == 2 and 60.0 <= host.returns_at - clock.now < 70.0
    clock.now = host.returns_at
    host.ejected_now(clock.now)
    clock.now += 200.0  # 20 intervals in service: back to one base ejection time
    b.failed(c, host)
    assert host.times_ejected == 1 and 30.0 <= host.returns_at - clock.now < 40.0


def test_new_endpoints_or_policy_rebuild_the_hosts_and_picker() -> None:
    """Kills hosts 18/23/67-69 (the cache follows endpoints and policy; the picker too)."""
    import attrs

    b = Balancer(seed=1)
    ring = cluster(3, lb="RING_HASH", hash_source_ip=True)
    b.pick_endpoint(ring, "192.0.2.1")
    fewer = attrs.evolve(ring, endpoints=ring.endpoints[:1])
    assert [h.address for h in b.hosts(fewer)] == ["10.0.0.1"]
    assert {b.pick_endpoint(fewer, f"192.0.2.{i}").address  # type: ignore[union-attr]
            for i in range(20)} == {"10.0.0.1"}
    rr = cluster(3, lb="ROUND_ROBIN")
    b2 = Balancer(seed=1)
    b2.pick_endpoint(rr)
    hashed = attrs.evolve(rr, policy=ClusterPolicy(lb="RING_HASH", hash_source_ip=True))
    assert len({b2.pick_endpoint(hashed, "192.0.2.9").address  # type: ignore[union-attr]
                for _ in range(6)}) == 1
    assert b2.clusters["c"].policy.lb == "RING_HASH"


def test_ring_hash_without_a_client_address_picks_any_host() -> None:
    """Kills pick_endpoint 29 (no source: a random available host)."""
    b = Balancer(seed=1)
    c = cluster(3, lb="MAGLEV", hash_source_ip=True)
    assert {b.pick_endpoint(c).address for _ in range(30)} == {  # type: ignore[union-attr]
        "10.0.0.1", "10.0.0.2", "10.0.0.3"}


def eject_all_but(b: Balancer, c: Cluster, healthy: int) -> None:
    b.pick_endpoint(c)
    for host in b.clusters[c.name].current[healthy:]:
        b.failed(c, host)


def test_min_health_percent_panic_edges() -> None:
    """Kills _available 12/15/18/20 (Envoy's panic threshold: healthy% < minHealthPercent)."""
    def used(n: int, percent: int, healthy: int) -> int:
        b = Balancer(clock=Clock(), seed=1)
        c = cluster(n, lb="ROUND_ROBIN", outlier=OutlierSettings(
            consecutive_5xx_errors=1, max_ejection_percent=100, min_health_percent=percent))
        eject_all_but(b, c, healthy)
        return len({h.address for h in (b.pick_endpoint(c) for _ in range(3 * n)) if h})

    assert used(3, 67, 2) == 3  # 66.7% healthy < 67%: panic, every host
    assert used(3, 66, 2) == 2
    assert used(2, 1, 0) == 2  # none healthy, 1%: panic
    assert used(4, 50, 1) == 4
    assert used(4, 50, 2) == 2


def test_ejections_return_on_the_detectors_interval_grid() -> None:
    """Kills Balancer.state 10 (the grid starts when the cluster's state is made)."""
    clock = Clock()
    clock.now = 1003.0
    b = Balancer(clock=clock, seed=1)
    c = cluster(2, outlier=OutlierSettings(consecutive_5xx_errors=1, interval=10.0,
                                           base_ejection_time=30.0, max_ejection_percent=100))
    b.pick_endpoint(c)
    host = b.clusters["c"].current[0]
    b.failed(c, host)
    assert host.returns_at == 1033.0


def test_ip_literals_are_not_resolved() -> None:
    """Kills is_ip 1/3 and hosts 38 (an IP endpoint of a DNS cluster is not a name)."""
    asked: list[str] = []

    class Recording(Dns):
        def addresses(self, name: str) -> tuple[str, ...]:
            asked.append(name)
            return super().addresses(name)

    b = Balancer(dns=Recording(), seed=1)
    c = Cluster(name="x", host="h", port=1, resolution="DNS",
                endpoints=(Endpoint("10.2.0.1", 1), Endpoint("2001:db8::1", 1),
                           Endpoint("db.example", 1)))
    assert [h.address for h in b.hosts(c)] == ["10.2.0.1", "2001:db8::1", "10.1.0.1", "10.1.0.2"]
    assert asked == ["db.example"]
