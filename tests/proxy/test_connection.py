"""
Unit tests of DownstreamProtocol's decisions and timeouts with an injected
clock (MemoryReactorClock) and string transports. Behaviour on real sockets
(half-close, backpressure, real TLS clients) is in tests/e2e/.
"""

from __future__ import annotations

from twisted.internet import error as ierror
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.support.routes import cluster, route
from tests.support.samples import client_hello
from tsgate.accesslog import AccessLog, AccessRecord
from tsgate.config import knobs
from tsgate.hints.tls import TlsHintParser
from tsgate.proxy.connection import CLOSED, CONNECTING, INSPECTING, RELAYING, DownstreamProtocol
from tsgate.proxy.context import ProxyContext, Settings
from tsgate.routing import Listener, SniChain


class HalfCloseTransport(StringTransport):
    """StringTransport plus the half-close and TCP calls the data path makes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.write_closed = False
        self.connected = True
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()






class Harness:
    def __init__(self, listener: Listener, **settings) -> None:
        self.reactor = MemoryReactorClock()
        self.records: list[AccessRecord] = []
        log = AccessLog(None)
        log.listeners.append(self.records.append)
        self.ctx = ProxyContext(reactor=self.reactor, access_log=log,
                                settings=Settings(**settings), inspectors=[TlsHintParser()])
        self.listener = listener

    def accept(self) -> tuple[DownstreamProtocol, HalfCloseTransport]:
        protocol = DownstreamProtocol(self.ctx, self.listener)
        transport = HalfCloseTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def connect_upstream(self, index: int = -1):
        host, port, factory, timeout, bind = self.reactor.tcpClients[index]
        upstream = factory.buildProtocol(None)
        transport = HalfCloseTransport()
        upstream.makeConnection(transport)
        return upstream, transport

    def close(self, protocol: DownstreamProtocol) -> None:
        protocol.connectionLost(Failure(ierror.ConnectionDone()))


TCP = Listener(bind="0.0.0.0", port=31400, tcp_route=route())
TLS_ONLY = Listener(bind="0.0.0.0", port=31400,
                    tls_chains=(SniChain(("a.example.test",), route("default/a#tls[0]")),))
MIXED = Listener(bind="0.0.0.0", port=31400, tcp_route=route(),
                 tls_chains=(SniChain(("a.example.test",), route("default/a#tls[0]")),))


class PlainTcpTests(SynchronousTestCase):
    def test_connects_at_accept_without_client_bytes(self) -> None:
        """A plain TCP listener connects upstream at once, client reads paused."""
        h = Harness(TCP)
        protocol, transport = h.accept()
        self.assertEqual(len(h.reactor.tcpClients), 1)
        self.assertEqual(h.reactor.tcpClients[0][:2], ("127.0.0.1", 2701))
        self.assertEqual(transport.producerState, "paused")
        self.assertIs(protocol.state, CONNECTING)

    def test_banner_relayed_before_client_speaks(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        self.assertIs(protocol.state, RELAYING)
        self.assertEqual(down.producerState, "producing")
        upstream.dataReceived(b"Welcome\n")
        self.assertEqual(down.value(), b"Welcome\n")
        protocol.dataReceived(b"hello Sam\n")
        self.assertEqual(up.value(), b"hello Sam\n")
        self.assertEqual((protocol.bytes_received, protocol.bytes_sent), (10, 8))

    def test_producers_registered_both_ways(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        self.assertIs(down.producer, up)
        self.assertIs(up.producer, down)
        self.assertTrue(down.streaming and up.streaming)

    def test_half_close_forwarded_both_ways(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        protocol.readConnectionLost()
        self.assertTrue(up.write_closed)
        self.assertFalse(down.disconnecting)
        upstream.readConnectionLost()
        self.assertTrue(down.write_closed)
        self.assertTrue(down.disconnecting and up.disconnecting)


class ConnectTimeoutTests(SynchronousTestCase):
    def test_connect_timeout_closes_client_with_uf(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        h.reactor.advance(9.9)
        self.assertFalse(down.disconnecting)
        h.reactor.advance(0.2)
        self.assertTrue(down.disconnecting)
        self.assertEqual(h.ctx.stats.get("cluster.upstream_cx_connect_timeout",
                                         cluster=cluster().name), 1)
        h.close(protocol)
        self.assertEqual(h.records[0].response_flags, "UF")

    def test_connect_timeout_from_destination_rule(self) -> None:
        listener = Listener(bind="0.0.0.0", port=1, tcp_route=route(
            cluster=cluster(connect_timeout=0.5)))
        h = Harness(listener)
        protocol, down = h.accept()
        h.reactor.advance(0.6)
        self.assertTrue(down.disconnecting)

    def test_connect_refused_is_uf(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        factory = h.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(None, Failure(ierror.ConnectionRefusedError()))
        self.assertTrue(down.disconnecting)
        h.close(protocol)
        self.assertEqual(h.records[0].response_flags, "UF")
        self.assertEqual(h.ctx.stats.get("cluster.upstream_cx_connect_fail",
                                         cluster=cluster().name), 1)


class InspectionTests(SynchronousTestCase):
    def test_sni_routes_to_chain_and_replays_hello(self) -> None:
        h = Harness(MIXED)
        protocol, down = h.accept()
        self.assertIs(protocol.state, INSPECTING)
        self.assertEqual(h.reactor.tcpClients, [])
        hello = client_hello("a.example.test")
        protocol.dataReceived(hello[:10])
        self.assertEqual(h.reactor.tcpClients, [])
        protocol.dataReceived(hello[10:])
        self.assertEqual(protocol.route.name, "default/a#tls[0]")
        upstream, up = h.connect_upstream()
        self.assertEqual(up.value(), hello)

    def test_inspection_timeout_goes_to_tcp_fallback(self) -> None:
        """A silent (server-first) client on a mixed port is served after the timeout."""
        h = Harness(MIXED, inspect_timeout=15)
        protocol, down = h.accept()
        h.reactor.advance(14.9)
        self.assertEqual(h.reactor.tcpClients, [])
        h.reactor.advance(0.2)
        self.assertEqual(len(h.reactor.tcpClients), 1)
        self.assertEqual(protocol.route.name, "default/echo#tcp[0]")
        self.assertEqual(h.ctx.stats.get("listener.downstream_pre_cx_timeout",
                                         listener="0.0.0.0_31400"), 1)
        self.assertEqual(h.ctx.stats.get("tls_inspector.read_timeout",
                                         listener="0.0.0.0_31400"), 1)

    def test_inspection_timeout_without_fallback_closes(self) -> None:
        h = Harness(TLS_ONLY, inspect_timeout=3)
        protocol, down = h.accept()
        h.reactor.advance(3)
        self.assertTrue(down.disconnecting)
        self.assertEqual(h.reactor.tcpClients, [])
        h.close(protocol)
        self.assertEqual(h.records[0].response_flags, "NR")

    def test_unknown_sni_without_fallback_is_nr(self) -> None:
        h = Harness(TLS_ONLY)
        protocol, down = h.accept()
        protocol.dataReceived(client_hello("b.example.test"))
        self.assertTrue(down.disconnecting)
        h.close(protocol)
        record = h.records[0]
        self.assertEqual((record.response_flags, record.response_code_details),
                         ("NR", "filter_chain_not_found"))
        self.assertEqual(record.requested_server_name, "b.example.test")
        self.assertEqual(h.ctx.stats.get("listener.no_filter_chain_match",
                                         listener="0.0.0.0_31400"), 1)

    def test_oversized_hello_is_counted_and_closed(self) -> None:
        """
        A hello past the TLS parser's max_bytes (16 KiB; Envoy's max_client_hello_size
        default is 64 KiB): client_hello_too_large, and the connection is closed
        without an upstream even where a TCP fallback exists, as Envoy's
        tls_inspector closes it (tests/proxy/test_inspect.py has the rest).
        """
        h = Harness(MIXED)
        protocol, down = h.accept()
        # a handshake record announcing a ClientHello of 60,000 bytes
        protocol.dataReceived(b"\x16\x03\x01\x3f\xff\x01\x00\xea\x60")
        self.assertEqual(h.ctx.stats.get("tls_inspector.client_hello_too_large",
                                         listener="0.0.0.0_31400"), 1)
        self.assertTrue(down.disconnecting)
        self.assertIsNone(protocol.route)
        self.assertEqual(h.reactor.tcpClients, [])

    def test_client_eof_during_inspection_closes_without_upstream(self) -> None:
        h = Harness(MIXED)
        protocol, down = h.accept()
        protocol.dataReceived(client_hello("a.example.test")[:20])
        protocol.readConnectionLost()
        self.assertTrue(down.disconnecting)
        self.assertEqual(h.reactor.tcpClients, [])

    def test_plaintext_on_mixed_port_goes_to_fallback_at_once(self) -> None:
        h = Harness(MIXED)
        protocol, down = h.accept()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertEqual(protocol.route.name, "default/echo#tcp[0]")
        upstream, up = h.connect_upstream()
        self.assertEqual(up.value(), b"GET / HTTP/1.1\r\n")

    def test_crashing_inspector_does_not_take_the_connection(self) -> None:
        class Crashing:
            name = protocol = "crash"
            max_bytes = 10

            def parse(self, data: bytes):
                raise ZeroDivisionError()

        h = Harness(MIXED)
        h.ctx.inspectors = [Crashing(), TlsHintParser()]
        protocol, down = h.accept()
        protocol.dataReceived(client_hello("a.example.test"))
        self.assertEqual(protocol.route.name, "default/a#tls[0]")
        self.assertEqual(h.ctx.stats.get("plugin.crashed", plugin="crash"), 1)
        self.flushLoggedErrors(ZeroDivisionError)


class IdleTimeoutTests(SynchronousTestCase):
    def test_idle_timeout_closes_both_sides(self) -> None:
        h = Harness(TCP, idle_timeout=60)
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        h.reactor.advance(30)
        protocol.dataReceived(b"x")
        h.reactor.advance(59)
        self.assertFalse(down.disconnecting)
        h.reactor.advance(1.5)
        self.assertTrue(down.disconnecting and up.disconnecting)
        self.assertEqual(h.ctx.stats.get("tcp.idle_timeout", route="default/echo#tcp[0]"), 1)

    def test_route_idle_timeout_zero_disables(self) -> None:
        listener = Listener(bind="0.0.0.0", port=1, tcp_route=route(idle_timeout=0))
        h = Harness(listener)
        protocol, down = h.accept()
        h.connect_upstream()
        h.reactor.advance(10 * 3600)
        self.assertFalse(down.disconnecting)

    def test_default_idle_timeout_is_one_hour(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        h.connect_upstream()
        h.reactor.advance(3599)
        self.assertFalse(down.disconnecting)
        h.reactor.advance(2)
        self.assertTrue(down.disconnecting)

    def test_closed_connection_cancels_timers(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        h.connect_upstream()
        h.close(protocol)
        self.assertIs(protocol.state, CLOSED)
        self.assertEqual(h.reactor.getDelayedCalls(), [])


class _CountingObserver:
    def __init__(self, emit) -> None:
        self.emit = emit
        self.client = b""

    def client_data(self, data: bytes) -> None:
        self.client += data
        self.emit("chunks", 1)

    def server_data(self, data: bytes) -> None:
        self.emit("server_chunks", 1)

    def attributes(self):
        return {"user": "sam", "database": "app"}


class _CrashingObserver(_CountingObserver):
    def client_data(self, data: bytes) -> None:
        raise RuntimeError("plugin bug")


class _Factory:
    name = protocol = "fake"
    istio_protocols = ("FAKE",)
    port_name_prefixes = ("fake",)

    def __init__(self, cls) -> None:
        self.cls = cls

    def new_observer(self, emit):
        return self.cls(emit)


OBSERVED = Listener(bind="0.0.0.0", port=6379, tcp_route=route(), protocols=("FAKE",),
                    port_names=("fake-x",), servers=(("FAKE", "fake-x"),))


class ObserverTests(SynchronousTestCase):
    def harness(self, *factories) -> Harness:
        h = Harness(OBSERVED)
        h.ctx.observers_for = lambda servers: list(factories)
        return h

    def test_observer_counts_and_attributes_reach_the_access_log(self) -> None:
        h = self.harness(_Factory(_CountingObserver))
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        protocol.dataReceived(b"PING\r\n")
        upstream.dataReceived(b"+PONG\r\n")
        self.assertEqual(up.value(), b"PING\r\n")
        self.assertEqual(down.value(), b"+PONG\r\n")
        self.assertEqual(h.ctx.stats.get("fake.chunks", listener="0.0.0.0_6379"), 1)
        self.assertEqual(h.ctx.stats.get("fake.server_chunks", listener="0.0.0.0_6379"), 1)
        h.close(protocol)
        self.assertEqual(h.records[0].hints, {"user": "sam", "database": "app"})
        self.assertIn(" database=app user=sam", h.records[0].text())

    def test_crashing_observer_is_dropped_and_the_relay_carries_on(self) -> None:
        h = self.harness(_Factory(_CrashingObserver), _Factory(_CountingObserver))
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        protocol.dataReceived(b"one")
        protocol.dataReceived(b"two")
        self.assertEqual(up.value(), b"onetwo")
        self.assertEqual(h.ctx.stats.get("plugin.observer_crashed", listener="0.0.0.0_6379"), 1)
        self.assertEqual(h.ctx.stats.get("fake.chunks", listener="0.0.0.0_6379"), 2)
        self.assertEqual(len(protocol.observers), 1)
        self.flushLoggedErrors(RuntimeError)

    def test_observer_factory_that_raises_costs_only_its_counters(self) -> None:
        class Broken(_Factory):
            def new_observer(self, emit):
                raise ValueError("cannot build")

        h = self.harness(Broken(_CountingObserver))
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        protocol.dataReceived(b"data")
        self.assertEqual(up.value(), b"data")
        self.assertEqual(h.ctx.stats.get("fake.observer_crashed", listener="0.0.0.0_6379"), 1)


class KnobTests(SynchronousTestCase):
    def test_inspect_timeout_annotation_overrides_the_option(self) -> None:
        listener = knobs.apply(Listener(bind="0.0.0.0", port=31400, tcp_route=route(),
                                        tls_chains=MIXED.tls_chains,
                                        annotations=(("tsgate.io/inspect-timeout", "1s"),)))
        h = Harness(listener, inspect_timeout=15)
        h.accept()
        h.reactor.advance(1.01)
        self.assertEqual(len(h.reactor.tcpClients), 1)

    def test_observers_annotation_chooses_by_name_or_none(self) -> None:
        chosen = _Factory(_CountingObserver)
        for value, expected in (("fake", [chosen]), ("none", [])):
            listener = knobs.apply(Listener(bind="0.0.0.0", port=1, tcp_route=route(),
                                            protocols=("REDIS",), port_names=("redis-x",),
                                            servers=(("REDIS", "redis-x"),),
                                            annotations=(("tsgate.io/observers", value),)))
            h = Harness(listener)
            h.ctx.observers_by_name = {"fake": chosen}
            h.ctx.observers_for = lambda servers: [_Factory(_CrashingObserver)]
            protocol, down = h.accept()
            h.connect_upstream()
            self.assertEqual([type(o) for o in protocol.observers],
                             [_CountingObserver] * len(expected))


class SelectionTests(SynchronousTestCase):
    def test_istio_selection_is_per_server(self) -> None:
        """A MONGO server named redis-x gets the mongo observer only (protocol wins)."""
        from tsgate.plugins import load_plugins
        from tsgate.tap import observer_selector

        select = observer_selector(load_plugins())
        servers = (("MONGO", "redis-x"), ("TCP", "kafka-y"))
        names = [f.name for f in select(servers)]
        self.assertEqual(names, ["mongo", "kafka"])
        self.assertEqual([f.name for f in select((("TCP", "plain"),))], [])


class MaxDurationTests(SynchronousTestCase):
    def test_max_connection_duration_closes_with_dt(self) -> None:
        listener = Listener(bind="0.0.0.0", port=1,
                            tcp_route=route(max_connection_duration=5.0))
        h = Harness(listener)
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        for _ in range(4):
            h.reactor.advance(1)
            protocol.dataReceived(b"busy")  # activity does not extend it
        self.assertFalse(down.disconnecting)
        h.reactor.advance(1.2)
        self.assertTrue(down.disconnecting and up.disconnecting)
        h.close(protocol)
        self.assertEqual(h.records[0].response_flags, "DT")
        self.assertEqual(h.ctx.stats.get("tcp.max_downstream_connection_duration",
                                         route="default/echo#tcp[0]"), 1)
