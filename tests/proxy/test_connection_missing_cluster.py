"""
The data path on a route whose cluster does not exist (``Cluster.missing``,
compiled for a subset no DestinationRule defines or a port the ServiceEntry
lacks): Envoy's tcp_proxy closes such a connection at once with ``NC``
(upstream cluster not found). Injected clock and string transports; the
real-socket test is tests/e2e/test_missing_cluster_e2e.py.
"""

from __future__ import annotations

from twisted.internet import error as ierror
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tsgate.accesslog import AccessLog, AccessRecord
from tsgate.proxy.connection import CLOSED, DownstreamProtocol
from tsgate.proxy.context import ProxyContext, Settings
from tsgate.routing import Cluster, Endpoint, Listener, Route, WeightedCluster

HOST = "echo.default.svc.cluster.local"
MISSING = Cluster(name=f"outbound|2701|v2|{HOST}", host=HOST, port=2701, subset="v2",
                  missing=True)
PRESENT = Cluster(name=f"outbound|2701|v1|{HOST}", host=HOST, port=2701, subset="v1",
                  endpoints=(Endpoint("127.0.0.1", 2701),))
ROUTE = "default/echo#tcp[0]"


class Transport(StringTransport):
    def abortConnection(self) -> None:
        self.loseConnection()


class MissingClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.records: list[AccessRecord] = []
        log = AccessLog(None)
        log.listeners.append(self.records.append)
        self.ctx = ProxyContext(reactor=self.reactor, access_log=log, settings=Settings())

    def connect(self, *destinations: WeightedCluster) -> DownstreamProtocol:
        listener = Listener(bind="0.0.0.0", port=31400,
                            tcp_route=Route(name=ROUTE, destinations=destinations))
        protocol = DownstreamProtocol(self.ctx, listener)
        transport = Transport()
        protocol.makeConnection(transport)
        if transport.disconnecting:
            protocol.connectionLost(Failure(ierror.ConnectionDone()))
        return protocol

    def counter(self, name: str, **labels: str) -> float:
        return sum(v for k, v in self.ctx.stats.counters.get(name, {}).items()
                   if set(labels.items()) <= set(k))

    def test_closed_at_once_with_nc_no_connect_attempt(self) -> None:
        protocol = self.connect(WeightedCluster(MISSING, 100))
        self.assertIs(protocol.state, CLOSED)
        self.assertEqual(self.reactor.tcpClients, [])
        [record] = self.records
        self.assertEqual(record.response_flags, "NC")
        self.assertEqual(record.upstream_cluster, MISSING.name)
        self.assertEqual(self.ctx.stats.get("tcp.downstream_cx_no_route", route=ROUTE), 1)
        self.assertEqual(self.counter("cluster.upstream_cx_none_healthy"), 0)
        self.assertEqual(self.counter("istio_tcp_connections_closed_total",
                                      response_flags="NC", destination_service=HOST), 1)
        self.assertEqual(self.counter("istio_tcp_connections_closed_total"), 1)
        self.assertEqual(self.counter("istio_tcp_connections_opened_total"), 1)
        self.assertEqual(self.counter("cluster.upstream_cx_total"), 0)

    def test_cluster_without_endpoints_is_still_uh(self) -> None:
        """Only a cluster compiled as missing is NC; an empty real one stays UH."""
        empty = Cluster(name=f"outbound|2701|v1|{HOST}", host=HOST, port=2701)
        self.connect(WeightedCluster(empty, 100))
        [record] = self.records
        self.assertEqual(record.response_flags, "UH")
        self.assertEqual(self.counter("tcp.downstream_cx_no_route"), 0)

    def test_weighted_route_picks_the_missing_cluster_by_weight(self) -> None:
        picks = iter([0.9, 0.1])
        self.ctx.balancer._random = lambda: next(picks)
        self.connect(WeightedCluster(PRESENT, 50), WeightedCluster(MISSING, 50))
        self.connect(WeightedCluster(PRESENT, 50), WeightedCluster(MISSING, 50))
        self.assertEqual(self.records[0].response_flags, "NC")
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.reactor.tcpClients[0][:2], ("127.0.0.1", 2701))
