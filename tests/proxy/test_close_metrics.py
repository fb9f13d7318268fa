"""
Istio's connection counters at close, on the injected clock: every closed
connection is counted in ``istio_tcp_connections_closed_total`` with its
response flags, and counted opened once, so opened minus closed is what is
open. The same on real sockets: tests/e2e/test_close_paths.py.
"""

from __future__ import annotations

from twisted.internet import error as ierror
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.proxy.test_connection import TCP, TLS_ONLY, Harness, cluster, route
from tests.support.samples import client_hello
from tsgate.routing import Cluster, Listener

CLOSED = "istio_tcp_connections_closed_total"
OPENED = "istio_tcp_connections_opened_total"


def by_flags(h: Harness, name: str) -> dict[tuple[str, str], float]:
    """{(destination_service, response_flags): count} of an Istio counter."""
    out: dict[tuple[str, str], float] = {}
    for key, value in h.ctx.stats.counters.get(name, {}).items():
        labels = dict(key)
        k = (labels["destination_service"], labels["response_flags"])
        out[k] = out.get(k, 0) + value
    return out


ECHO = "echo.default.svc.cluster.local"


class CloseCountTests(SynchronousTestCase):
    """Catches: connections that never reached an upstream left out of the counters."""

    def test_relayed_connection(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        self.assertEqual(by_flags(h, OPENED), {(ECHO, "-"): 1})
        self.assertEqual(by_flags(h, CLOSED), {})
        protocol.dataReceived(b"abc")
        upstream.dataReceived(b"defgh")
        h.close(protocol)
        self.assertEqual(by_flags(h, CLOSED), {(ECHO, "-"): 1})
        self.assertEqual(by_flags(h, OPENED), {(ECHO, "-"): 1})
        self.assertEqual(by_flags(h, "istio_tcp_received_bytes_total"), {(ECHO, "-"): 3})
        self.assertEqual(by_flags(h, "istio_tcp_sent_bytes_total"), {(ECHO, "-"): 5})

    def test_connect_refused_is_counted_uf(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        h.reactor.tcpClients[0][2].clientConnectionFailed(
            None, Failure(ierror.ConnectionRefusedError()))
        h.close(protocol)
        self.assertEqual(by_flags(h, CLOSED), {(ECHO, "UF"): 1})
        self.assertEqual(by_flags(h, OPENED), {(ECHO, "-"): 1})

    def test_connect_timeout_is_counted_uf(self) -> None:
        h = Harness(TCP, connect_timeout=1)
        protocol, down = h.accept()
        h.reactor.advance(1.1)
        h.close(protocol)
        self.assertEqual(by_flags(h, CLOSED), {(ECHO, "UF"): 1})

    def test_no_endpoint_is_counted_uh(self) -> None:
        empty = Cluster(name="outbound|2701||echo.default.svc.cluster.local", host=ECHO,
                        port=2701)
        h = Harness(Listener(bind="0.0.0.0", port=1, tcp_route=route(cluster=empty)))
        protocol, down = h.accept()
        self.assertTrue(down.disconnecting)
        h.close(protocol)
        self.assertEqual(by_flags(h, CLOSED), {(ECHO, "UH"): 1})
        self.assertEqual(by_flags(h, OPENED), {(ECHO, "-"): 1})

    def test_overflow_is_counted_uo(self) -> None:
        limited = route(cluster=cluster(max_connections=1))
        h = Harness(Listener(bind="0.0.0.0", port=1, tcp_route=limited))
        first, _ = h.accept()
        h.connect_upstream()
        second, down = h.accept()
        self.assertTrue(down.disconnecting)
        h.close(second)
        self.assertEqual(by_flags(h, CLOSED), {(ECHO, "UO"): 1})
        h.close(first)
        self.assertEqual(by_flags(h, CLOSED), {(ECHO, "UO"): 1, (ECHO, "-"): 1})
        self.assertEqual(by_flags(h, OPENED), {(ECHO, "-"): 2})

    def test_no_route_is_counted_nr_with_unknown_destination(self) -> None:
        h = Harness(TLS_ONLY)
        protocol, down = h.accept()
        protocol.dataReceived(client_hello("b.example.test"))
        h.close(protocol)
        self.assertEqual(by_flags(h, CLOSED), {("unknown", "NR"): 1})
        self.assertEqual(by_flags(h, OPENED), {("unknown", "-"): 1})
        (key,) = h.ctx.stats.counters[CLOSED]
        labels = dict(key)
        self.assertEqual((labels["destination_service_name"],
                          labels["destination_service_namespace"], labels["reporter"],
                          labels["request_protocol"]), ("unknown", "unknown", "source", "tcp"))

    def test_max_duration_is_counted_dt(self) -> None:
        h = Harness(Listener(bind="0.0.0.0", port=1,
                             tcp_route=route(max_connection_duration=2.0)))
        protocol, down = h.accept()
        h.connect_upstream()
        h.reactor.advance(2.1)
        h.close(protocol)
        self.assertEqual(by_flags(h, CLOSED), {(ECHO, "DT"): 1})
        self.assertEqual(by_flags(h, OPENED), {(ECHO, "-"): 1})
