"""
Load balancing, outlier detection and host state: the pure logic, with an
injected clock and seeded randomness. Real sockets are in
tests/e2e/test_traffic_policy.py.
"""

from __future__ import annotations

import collections
from typing import Any, Optional

import pytest

from tsgate.routing import Cluster, Endpoint
from tsgate.upstream.balancer import Balancer
from tsgate.upstream.lb import Maglev, RingHash
from tsgate.upstream.policy import ClusterPolicy, OutlierSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cluster(n: int = 3, weights: Optional[list[int]] = None, name: str = "c",
            resolution: str = "STATIC", **policy: Any) -> Cluster:
    weights = weights or [1] * n
    endpoints = tuple(Endpoint(f"10.0.0.{i + 1}", 80, weights[i]) for i in range(n))
    pol = ClusterPolicy(**policy)
    return Cluster(name=name, host="h", port=80, endpoints=endpoints, resolution=resolution,
                   lb_policy=pol.lb, policy=pol)


def picks(b: Balancer, c: Cluster, count: int, source: Optional[str] = None,
          hold: bool = False) -> collections.Counter:
    seen: collections.Counter = collections.Counter()
    for _ in range(count):
        h = b.pick_endpoint(c, source)
        assert h is not None
        if hold:
            h.active += 1
        seen[h.address] += 1
    return seen


def test_round_robin_rotates_evenly() -> None:
    b, c = Balancer(seed=1), cluster(3, lb="ROUND_ROBIN")
    order = [b.pick_endpoint(c).address for _ in range(6)]  # type: ignore[union-attr]
    assert order == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] * 2


def test_weighted_round_robin_is_proportional_and_smooth() -> None:
    b, c = Balancer(seed=1), cluster(3, weights=[5, 1, 1], lb="ROUND_ROBIN")
    order = [b.pick_endpoint(c).address for _ in range(7)]  # type: ignore[union-attr]
    assert collections.Counter(order) == {"10.0.0.1": 5, "10.0.0.2": 1, "10.0.0.3": 1}
    assert order[:2] != ["10.0.0.1", "10.0.0.1"] or order[2] != "10.0.0.1"  # interleaved


def test_least_request_two_hosts_takes_the_one_with_fewer_active() -> None:
    b, c = Balancer(seed=1), cluster(2, lb="LEAST_REQUEST")
    first = b.pick_endpoint(c)
    assert first is not None
    first.active += 5
    assert all(b.pick_endpoint(c) is not first for _ in range(20))


def test_least_request_spreads_held_connections_evenly() -> None:
    b, c = Balancer(seed=7), cluster(4, lb="LEAST_REQUEST")
    seen = picks(b, c, 400, hold=True)
    # power of two choices with every connection held: close to even
    assert max(seen.values()) - min(seen.values()) <= 3, seen


def test_least_request_avoids_a_busy_host_over_many_hosts() -> None:
    b, c = Balancer(seed=3), cluster(5, lb="LEAST_REQUEST")
    hosts = b.hosts(c)
    hosts[0].active = 1000
    seen = picks(b, c, 200)
    assert "10.0.0.1" not in seen  # it loses every comparison it is drawn into


def test_random_covers_all_and_respects_weights() -> None:
    b, c = Balancer(seed=5), cluster(2, weights=[3, 1], lb="RANDOM")
    seen = picks(b, c, 4000)
    assert 2700 < seen["10.0.0.1"] < 3300


@pytest.mark.parametrize("lb", ["RING_HASH", "MAGLEV"])
def test_consistent_hash_is_sticky_per_source(lb: str) -> None:
    b = Balancer(seed=1)
    c = cluster(4, lb=lb, hash_source_ip=True, maglev_size=251)
    sources = [f"127.0.0.{i}" for i in range(2, 40)]
    first = {s: b.pick_endpoint(c, s).address for s in sources}  # type: ignore[union-attr]
    for _ in range(3):
        assert {s: b.pick_endpoint(c, s).address for s in sources} == first  # type: ignore[union-attr]
    assert len(set(first.values())) >= 3  # sources spread over the hosts
    # a new balancer (a restart) with the same endpoints gives the same answers
    again = Balancer(seed=99)
    assert {s: again.pick_endpoint(c, s).address for s in sources} == first  # type: ignore[union-attr]


@pytest.mark.parametrize("lb", ["RING_HASH", "MAGLEV"])
def test_hashing_moves_only_the_keys_of_an_ejected_host(lb: str) -> None:
    clock = Clock()
    b = Balancer(seed=1, clock=clock)
    c = cluster(4, lb=lb, hash_source_ip=True, maglev_size=1009,
                outlier=OutlierSettings(consecutive_5xx_errors=1, max_ejection_percent=100))
    sources = [f"10.9.{i}.{j}" for i in range(4) for j in range(25)]
    before = {s: b.pick_endpoint(c, s) for s in sources}
    victim = b.hosts(c)[0]
    assert b.failed(c, victim) == "ejected"
    after = {s: b.pick_endpoint(c, s) for s in sources}
    for s in sources:
        if before[s] is not victim:
            assert after[s] is before[s]
        else:
            assert after[s] is not victim
    clock.now = victim.returns_at  # the ejection ends: every key goes home
    assert {s: b.pick_endpoint(c, s) for s in sources} == before


def test_ring_size_and_maglev_table_size_are_honoured() -> None:
    hosts = Balancer().hosts(cluster(3))
    assert len(RingHash(hosts, 300).hashes) == 300
    m = Maglev(hosts, 101)
    table = m._build((0, 1, 2))
    assert m.pick("k", lambda h: False) is None
    assert len(table) == 101
    counts = collections.Counter(table)
    assert max(counts.values()) - min(counts.values()) <= 2  # Maglev's near-even split


def test_maglev_weights() -> None:
    c = cluster(2, weights=[3, 1])
    hosts = Balancer().hosts(c)
    table = Maglev(hosts, 1009)._build((0, 1))
    counts = collections.Counter(table)
    assert 0.7 < counts[0] / 1009 < 0.8


def test_outlier_ejection_lasts_base_times_count_rounded_to_interval() -> None:
    clock = Clock()
    b = Balancer(seed=1, clock=clock)
    od = OutlierSettings(consecutive_5xx_errors=2, interval=10.0, base_ejection_time=30.0,
                         max_ejection_percent=100)
    c = cluster(2, lb="ROUND_ROBIN", outlier=od)
    b.state(c)  # the detector's interval grid starts now (1000)
    dead = b.hosts(c)[0]
    assert b.failed(c, dead) is None  # 1 of 2
    clock.now += 3
    assert b.failed(c, dead) == "ejected"
    # 1003 + 30 = 1033, returned on the next interval tick: 1040
    assert dead.returns_at == 1040.0
    assert all(b.pick_endpoint(c) is not dead for _ in range(10))
    clock.now = 1039.9
    assert b.pick_endpoint(c) is not dead and b.pick_endpoint(c) is not dead
    clock.now = 1040.0
    assert {b.pick_endpoint(c).address for _ in range(4)} == {"10.0.0.1", "10.0.0.2"}  # type: ignore[union-attr]
    # ejected again soon: twice the base time
    b.failed(c, dead)
    assert b.failed(c, dead) == "ejected"
    assert dead.times_ejected == 2
    assert dead.returns_at == 1100.0  # 1040 + 60


def test_success_resets_the_consecutive_count() -> None:
    b = Balancer(seed=1, clock=Clock())
    c = cluster(2, outlier=OutlierSettings(consecutive_5xx_errors=2, max_ejection_percent=100))
    h = b.hosts(c)[0]
    b.failed(c, h)
    b.connected(c, h)
    assert b.failed(c, h) is None


def test_gateway_errors_threshold_alone_ejects() -> None:
    b = Balancer(seed=1, clock=Clock())
    od = OutlierSettings(consecutive_gateway_errors=1, consecutive_5xx_errors=0,
                         max_ejection_percent=100)
    c = cluster(2, outlier=od)
    assert b.failed(c, b.hosts(c)[0]) == "ejected"
    c0 = cluster(2, name="zero", outlier=OutlierSettings(consecutive_5xx_errors=0))
    assert all(b.failed(c0, b.hosts(c0)[0]) is None for _ in range(10))


def test_max_ejection_percent_limits_ejections() -> None:
    b = Balancer(seed=1, clock=Clock())
    c = cluster(4, outlier=OutlierSettings(consecutive_5xx_errors=1, max_ejection_percent=50))
    hosts = b.hosts(c)
    assert b.failed(c, hosts[0]) == "ejected"  # 25 %
    assert b.failed(c, hosts[1]) == "ejected"  # 50 %
    assert b.failed(c, hosts[2]) == "overflow"  # would be 75 %
    # the default 10 % still ejects one host (Envoy always allows one)
    c10 = cluster(3, name="ten", outlier=OutlierSettings(consecutive_5xx_errors=1))
    h10 = b.hosts(c10)
    assert b.failed(c10, h10[0]) == "ejected"
    assert b.failed(c10, h10[1]) == "overflow"


def test_no_available_host_is_none_unless_min_health_percent_panics() -> None:
    b = Balancer(seed=1, clock=Clock())
    c = cluster(2, outlier=OutlierSettings(consecutive_5xx_errors=1, max_ejection_percent=100))
    for h in b.hosts(c):
        b.failed(c, h)
    assert b.pick_endpoint(c) is None
    panic = cluster(2, name="p", outlier=OutlierSettings(
        consecutive_5xx_errors=1, max_ejection_percent=100, min_health_percent=50))
    hosts = b.hosts(panic)
    b.failed(panic, hosts[0])
    assert all(b.pick_endpoint(panic) is hosts[1] for _ in range(5))  # 50 % healthy: no panic
    b.failed(panic, hosts[1])
    assert b.pick_endpoint(panic) is not None  # below 50 %: every host is used


def test_health_checked_unhealthy_host_gets_nothing() -> None:
    b = Balancer(seed=1, clock=Clock())
    c = cluster(3, lb="ROUND_ROBIN")
    hosts = b.hosts(c)
    b.set_health(c.name, hosts[1], False)
    assert "10.0.0.2" not in picks(b, c, 30)
    views = {v["address"]: v["status"] for v in b.host_views(c)}
    assert views == {"10.0.0.1": "healthy", "10.0.0.2": "unhealthy", "10.0.0.3": "healthy"}


def test_exclude_skips_hosts_already_tried() -> None:
    b = Balancer(seed=1)
    c = cluster(2, lb="ROUND_ROBIN")
    first = b.pick_endpoint(c)
    assert first is not None
    assert all(b.pick_endpoint(c, exclude=[first]) is not first for _ in range(5))
    assert b.pick_endpoint(c, exclude=b.hosts(c)) is None


class FakeDns:
    def __init__(self) -> None:
        self.generation = 0
        self.answers: dict[str, tuple[str, ...]] = {}

    def addresses(self, name: str) -> tuple[str, ...]:
        return self.answers.get(name, ())


def test_dns_names_expand_to_their_addresses_and_follow_changes() -> None:
    dns = FakeDns()
    b = Balancer(seed=1, dns=dns)
    c = Cluster(name="d", host="svc", port=80, resolution="DNS",
                endpoints=(Endpoint("svc.example", 8080),), policy=ClusterPolicy(lb="ROUND_ROBIN"))
    assert [h.key for h in b.hosts(c)] == ["svc.example:8080"]  # not resolved yet: by name
    dns.answers["svc.example"] = ("10.1.0.1", "10.1.0.2")
    dns.generation += 1
    assert [h.key for h in b.hosts(c)] == ["10.1.0.1:8080", "10.1.0.2:8080"]
    kept = b.hosts(c)[1]
    kept.active = 3
    dns.answers["svc.example"] = ("10.1.0.2", "10.1.0.3")
    dns.generation += 1
    hosts = b.hosts(c)
    assert [h.key for h in hosts] == ["10.1.0.2:8080", "10.1.0.3:8080"]
    assert hosts[0] is kept and kept.active == 3  # state survives a refresh


def test_dns_round_robin_uses_one_address_at_a_time() -> None:
    dns = FakeDns()
    b = Balancer(seed=1, dns=dns)
    c = Cluster(name="l", host="svc", port=80, resolution="DNS",
                endpoints=(Endpoint("svc.example", 80),),
                policy=ClusterPolicy(lb="ROUND_ROBIN", dns_round_robin=True))
    dns.answers["svc.example"] = ("10.1.0.7", "10.1.0.8")
    dns.generation += 1
    assert {b.pick_endpoint(c).address for _ in range(5)} == {"10.1.0.7"}  # type: ignore[union-attr]
    dns.answers["svc.example"] = ("10.1.0.8", "10.1.0.7")
    dns.generation += 1
    assert {b.pick_endpoint(c).address for _ in range(5)} == {"10.1.0.8"}  # type: ignore[union-attr]


def test_an_unchanged_dns_answer_keeps_the_hash_table() -> None:
    dns = FakeDns()
    b = Balancer(seed=1, dns=dns)
    c = Cluster(name="m", host="svc", port=80, resolution="DNS",
                endpoints=(Endpoint("svc.example", 80),),
                policy=ClusterPolicy(lb="MAGLEV", hash_source_ip=True, maglev_size=101))
    dns.answers["svc.example"] = ("10.1.0.1", "10.1.0.2")
    dns.generation += 1
    b.hosts(c)
    picker = b.state(c)._picker
    dns.answers["other.example"] = ("10.9.9.9",)  # another name changed
    dns.generation += 1
    b.hosts(c)
    assert b.state(c)._picker is picker
