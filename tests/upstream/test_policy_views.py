"""What /clusters and explain say about the policy in force and each endpoint's state."""

from __future__ import annotations

from tests.admin.fakes import FakeGateway
from tsgate.admin.views import clusters_text, clusters_view
from tsgate.routing import Cluster, Endpoint, Listener, Route, RouteTable, WeightedCluster
from tsgate.upstream.balancer import Balancer
from tsgate.upstream.policy import ClusterPolicy, HealthCheck, OutlierSettings

POLICY = ClusterPolicy(lb="ROUND_ROBIN", connect_attempts=2, health_check=HealthCheck(),
                       outlier=OutlierSettings(consecutive_5xx_errors=1,
                                               max_ejection_percent=100))
CLUSTER = Cluster(name="outbound|80||svc", host="svc", port=80, lb_policy="ROUND_ROBIN",
                  endpoints=(Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80),
                             Endpoint("10.0.0.3", 80)), policy=POLICY)
TABLE = RouteTable(listeners=(Listener(bind="0.0.0.0", port=7000, tcp_route=Route(
    name="default/vs#tcp[0]", destinations=(WeightedCluster(CLUSTER, 100),))),))


def test_clusters_show_the_policy_and_each_endpoint_state() -> None:
    gateway = FakeGateway()
    gateway.table = TABLE
    clock = [100.0]
    balancer = Balancer(seed=1, clock=lambda: clock[0])
    gateway.balancer = balancer  # type: ignore[attr-defined]
    hosts = balancer.hosts(CLUSTER)
    balancer.failed(CLUSTER, hosts[0])  # ejected
    balancer.set_health(CLUSTER.name, hosts[1], False)
    hosts[2].active = 4
    (view,) = clusters_view(gateway)
    assert view["lb_policy"] == "ROUND_ROBIN"
    assert "connect attempts 2" in view["policy"]
    states = {e["address"]: (e["status"], e["active_connections"]) for e in view["endpoints"]}
    assert states == {"10.0.0.1": ("ejected", 0), "10.0.0.2": ("unhealthy", 0),
                      "10.0.0.3": ("healthy", 4)}
    text = clusters_text([view])
    assert "outbound|80||svc::10.0.0.1:80::health_flags::ejected" in text
    assert "outbound|80||svc::lb_policy::ROUND_ROBIN" in text
    assert balancer.pick_endpoint(CLUSTER) is hosts[2]
