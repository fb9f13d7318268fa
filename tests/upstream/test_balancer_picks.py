"""
The balancer's choices and its per-cluster state, with an injected random
source: weighted cluster picks at the edges of each weight's interval, round
robin over endpoints, and the Istio metric labels of a cluster.
"""

from __future__ import annotations

import attrs

from tsgate.routing import Cluster, Endpoint, Route, WeightedCluster
from tsgate.upstream.balancer import Balancer, ClusterState, istio_metric_labels
from tsgate.upstream.policy import ClusterPolicy


def cluster(name: str, host: str = "echo.default.svc.cluster.local",
            endpoints: tuple[Endpoint, ...] = ()) -> Cluster:
    return Cluster(name=name, host=host, port=2701, endpoints=endpoints)


A, B, C = cluster("a"), cluster("b"), cluster("c")
WEIGHTED = Route("r", (WeightedCluster(A, 20), WeightedCluster(B, 30), WeightedCluster(C, 50)))


def pick(value: float, route: Route = WEIGHTED) -> str:
    return Balancer(choice=lambda: value).pick_cluster(route).name


def test_weighted_pick_follows_the_intervals_of_the_weights():
    """[0, 0.2) -> a, [0.2, 0.5) -> b, [0.5, 1) -> c: the boundaries belong to the next one."""
    assert [pick(v) for v in (0.0, 0.1999, 0.2, 0.4999, 0.5, 0.9999)] == [
        "a", "a", "b", "b", "c", "c"]


def test_weighted_pick_past_the_end_takes_the_last_destination():
    """A random source returning 1.0 (outside [0, 1)) still picks a destination: the last."""
    assert pick(1.0) == "c"
    assert pick(5.0) == "c"


def test_single_destination_needs_no_random_number():
    def never() -> float:
        raise AssertionError("no random number needed")

    only = Route("r", (WeightedCluster(A, 100),))
    assert Balancer(choice=never).pick_cluster(only) is A


def test_default_random_source_spreads_by_weight():
    balancer = Balancer()
    picks = [balancer.pick_cluster(WEIGHTED).name for _ in range(3000)]
    share = {name: picks.count(name) / len(picks) for name in "abc"}
    assert 0.15 < share["a"] < 0.25 and 0.25 < share["b"] < 0.35 and 0.45 < share["c"] < 0.55


def test_round_robin_over_endpoints_per_cluster():
    """With ROUND_ROBIN (no longer the default since LEAST_REQUEST is served, issue 11)."""
    e1, e2, e3 = Endpoint("10.0.0.1", 1), Endpoint("10.0.0.2", 2), Endpoint("10.0.0.3", 3)
    rr = ClusterPolicy(lb="ROUND_ROBIN")
    three = attrs.evolve(cluster("three", endpoints=(e1, e2, e3)), lb_policy="ROUND_ROBIN",
                         policy=rr)
    one = attrs.evolve(cluster("one", endpoints=(e1,)), lb_policy="ROUND_ROBIN", policy=rr)
    balancer = Balancer()

    def picks(c: Cluster, n: int) -> list[tuple[str, int]]:
        out = []
        for _ in range(n):
            host = balancer.pick_endpoint(c)
            assert host is not None
            out.append((host.address, host.port))
        return out

    a, b, c = ("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3)
    assert picks(three, 7) == [a, b, c, a, b, c, a]
    assert picks(one, 2) == [a, a]


def test_no_endpoint_is_none():
    balancer = Balancer()
    assert balancer.pick_endpoint(cluster("empty")) is None


def test_state_is_per_cluster_name_and_survives_an_equal_recompile():
    balancer = Balancer()
    first = balancer.state(A)
    assert balancer.state(cluster("a")) is first
    assert balancer.state(B) is not first
    assert (first.name, first.next_index, first.active, first.total,
            first.connect_failures, list(first.recent_errors)) == ("a", 0, 0, 0, 0, [])
    assert first.recent_errors.maxlen == 20


def test_istio_labels_of_a_kubernetes_service():
    assert istio_metric_labels(cluster("x", host="tcp-echo.istioinaction.svc.cluster.local")) == {
        "reporter": "source",
        "source_workload": "tsgate",
        "source_workload_namespace": "unknown",
        "destination_service": "tcp-echo.istioinaction.svc.cluster.local",
        "destination_service_name": "tcp-echo",
        "destination_service_namespace": "istioinaction",
        "request_protocol": "tcp",
        "connection_security_policy": "unknown",
    }


def test_istio_labels_of_other_hosts_have_no_namespace():
    for host, name in (("api.example.com", "api"), ("db.local", "db"), ("solo", "solo"),
                       ("a.b.svc", "a")):
        labels = istio_metric_labels(cluster("x", host=host))
        assert labels["destination_service"] == host
        assert labels["destination_service_name"] == name
        expected = "b" if host == "a.b.svc" else "unknown"
        assert labels["destination_service_namespace"] == expected, host


def test_metric_keys_are_sorted_labels_with_response_flags_and_reused():
    k = cluster("k", host="e.ns.svc.cluster.local")
    state = Balancer().state(k)
    assert state.metric_labels == istio_metric_labels(k)
    plain = state.metric_key()
    assert plain == tuple(sorted({**state.metric_labels, "response_flags": "-"}.items()))
    assert dict(state.metric_key("UF"))["response_flags"] == "UF"
    assert state.metric_key() is plain  # built once per flags value
    assert state.metric_key("UF") is state.metric_key("UF")
    assert state.cluster_key == (("cluster", "k"),)


def test_cluster_state_defaults():
    state = ClusterState("n")
    assert state.metric_labels == {} and state.metric_key() == (("response_flags", "-"),)
