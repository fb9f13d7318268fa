"""
A fake gateway for the admin tests: real route-table records, real Stats,
a list of connection snapshots, and drain/reload that record their calls.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from tsgate.admin.state import ConnectionSnapshot
from tsgate.routing import (
    Cluster,
    Endpoint,
    Listener,
    Route,
    RouteTable,
    SniChain,
    SourceRef,
    WeightedCluster,
)
from tsgate.stats import Stats

ECHO = Cluster(
    name="outbound|2701||tcp-echo-service",
    host="tcp-echo-service",
    port=2701,
    resolution="HOSTNAME",
)
SNI1 = Cluster(
    name="outbound|80||simple-tls-service-1",
    host="simple-tls-service-1",
    port=80,
    resolution="STATIC",
    endpoints=(Endpoint("10.0.0.11", 8080), Endpoint("10.0.0.12", 8080, weight=3)),
)
SNI2 = Cluster(name="outbound|80||simple-tls-service-2", host="simple-tls-service-2", port=80)

TCP_ROUTE = Route(
    name="default/tcp-echo-vs-from-gw#tcp[0]",
    destinations=(WeightedCluster(ECHO, 100),),
    source=SourceRef("echo-vs.yaml", 9, "VirtualService default/tcp-echo-vs-from-gw",
                     "spec.tcp[0]"),
)
SNI1_ROUTE = Route(name="default/simple-sni-1-vs#tls[0]",
                   destinations=(WeightedCluster(SNI1, 100),))
SPLIT_ROUTE = Route(
    name="default/simple-sni-2-vs#tls[0]",
    destinations=(WeightedCluster(SNI2, 80), WeightedCluster(ECHO, 20)),
)

TABLE = RouteTable(
    listeners=(
        Listener(
            bind="0.0.0.0",
            port=31400,
            tls_chains=(
                SniChain(("simple-sni-1.istioinaction.io",), SNI1_ROUTE),
                SniChain(("*.istioinaction.io",), SPLIT_ROUTE),
            ),
            tcp_route=TCP_ROUTE,
            protocols=("TLS", "TCP"),
        ),
        Listener(bind="0.0.0.0", port=31401, tcp_route=TCP_ROUTE, protocols=("TCP",)),
    )
)


@attrs.define
class FakeConfig:
    ok: bool = True
    files: tuple[str, ...] = ("gateway-tcp.yaml", "echo-vs.yaml")
    diagnostics: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    resources: tuple[Any, ...] = ()
    table: RouteTable = TABLE


class FakeGateway:
    """Satisfies tsgate.admin.state.GatewayState."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.stats = Stats()
        self.config: Any = FakeConfig()
        self.table = TABLE
        self.ready = True
        self.recent_errors: deque[tuple[float, str]] = deque(maxlen=100)
        self.live: list[ConnectionSnapshot] = []
        self.drains = 0
        self.reloads = 0
        self.reload_result: Any = FakeConfig()
        self.drained: Deferred[None] = Deferred()
        self.now = now

    def connections(self) -> list[ConnectionSnapshot]:
        return list(self.live)

    def drain(self) -> Deferred[None]:
        self.drains += 1
        self.ready = False
        return self.drained

    def reload(self) -> Any:
        self.reloads += 1
        return self.reload_result

    def add_connection(self, route: Route | None, n: int = 1, sni: str | None = None,
                       listener: str = "0.0.0.0_31400", upstream: str | None = None) -> None:
        for i in range(n):
            self.live.append(ConnectionSnapshot(
                listener=listener,
                downstream=f"127.0.0.1:{40000 + len(self.live)}",
                started=self.now - 10 - i,
                route=route.name if route else None,
                cluster=route.destinations[0].cluster.name if route else None,
                upstream=upstream,
                sni=sni,
                bytes_received=100 * (i + 1),
                bytes_sent=1000 * (i + 1),
            ))


def busy_gateway() -> FakeGateway:
    """A gateway with connections on three routes and one still choosing."""
    gw = FakeGateway()
    gw.add_connection(TCP_ROUTE, 3, upstream="10.9.9.9:2701")
    gw.add_connection(SNI1_ROUTE, 2, sni="simple-sni-1.istioinaction.io", upstream="10.0.0.12:8080")
    gw.add_connection(SPLIT_ROUTE, 1, sni="a.istioinaction.io")
    gw.add_connection(None, 1)
    gw.add_connection(TCP_ROUTE, 4, listener="0.0.0.0_31401", upstream="10.9.9.9:2701")
    gw.recent_errors.append((gw.now - 5, "connect to outbound|80||simple-tls-service-1 "
                                         "10.0.0.11:8080 failed: refused"))
    gw.recent_errors.append((gw.now - 1, "no filter chain for SNI <script>x</script> "
                                         "on 0.0.0.0_31400"))
    gw.stats.inc("cluster.upstream_cx_connect_fail", cluster=SNI1.name)
    return gw
