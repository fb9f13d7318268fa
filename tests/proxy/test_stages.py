"""
The pipeline's seams (tsgate.proxy.stages): each hook a feature plugs in runs
at its stage, in order, and can end the connection with a response flag.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.trial.unittest import SynchronousTestCase

from tests.support.proxy import Harness, route
from tests.support.samples import client_hello
from tsgate.proxy.stages import NEED_MORE, Ending, StageResult, Stages
from tsgate.proxy.state import CONNECTING, INSPECTING, RELAYING
from tsgate.routing import Listener, SniChain

TCP = Listener(bind="0.0.0.0", port=31400, tcp_route=route())
TLS = Listener(bind="0.0.0.0", port=31400,
               tls_chains=(SniChain(("a.example.test",), route("default/a#tls[0]")),))


class HeaderStage:
    """A PROXY-protocol-like stage: ``HDR <address>\\n`` names the client."""

    name = "hdr"

    def feed(self, conn: Any, data: bytes) -> StageResult:
        end = data.find(b"\n")
        if end < 0:
            return NEED_MORE if len(data) < 64 else Ending("-", "-", "bad_header")
        if not data.startswith(b"HDR "):
            return Ending(termination="bad_header", why="no header")
        conn.remote_address = data[4:end].decode()
        return end + 1


def provide(**hooks: Any) -> Any:
    return lambda listener: Stages(**hooks)


class ListenerStageTests(SynchronousTestCase):
    def test_header_sets_remote_address_and_the_rest_is_replayed(self) -> None:
        h = Harness(TCP, [provide(listener=(HeaderStage(),))])
        protocol, down = h.accept()
        self.assertEqual(h.reactor.tcpClients, [])  # waits for the header
        self.assertIs(protocol.state, INSPECTING)
        protocol.dataReceived(b"HDR 198.51.100.7:5")
        protocol.dataReceived(b"555\nhello")
        self.assertEqual(len(h.reactor.tcpClients), 1)
        self.assertEqual(down.producerState, "paused")
        self.assertEqual(protocol.remote_address, "198.51.100.7:5555")
        self.assertEqual(protocol.peer_address, "127.0.0.9:40001")
        upstream, up = h.connect_upstream()
        self.assertIs(protocol.state, RELAYING)
        self.assertEqual(up.value(), b"hello")
        h.close(protocol)
        record = h.records[0]
        self.assertEqual(record.downstream_remote_address, "198.51.100.7:5555")
        self.assertEqual(record.downstream_peer_address, "127.0.0.9:40001")
        self.assertEqual(record.as_dict()["downstream_peer_address"], "127.0.0.9:40001")

    def test_without_header_remote_is_the_peer(self) -> None:
        h = Harness(TCP)
        protocol, down = h.accept()
        self.assertEqual(protocol.remote_address, protocol.peer_address)
        h.connect_upstream()
        h.close(protocol)
        self.assertEqual(h.records[0].downstream_remote_address, "127.0.0.9:40001")
        self.assertEqual(h.records[0].downstream_peer_address, "127.0.0.9:40001")

    def test_stage_ends_the_connection_before_any_upstream(self) -> None:
        h = Harness(TCP, [provide(listener=(HeaderStage(),))])
        protocol, down = h.accept()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertTrue(down.disconnecting)
        self.assertEqual(h.reactor.tcpClients, [])
        h.close(protocol)
        self.assertEqual(h.records[0].connection_termination_details, "bad_header")

    def test_stage_runs_before_sni_inspection(self) -> None:
        h = Harness(TLS, [provide(listener=(HeaderStage(),))])
        protocol, down = h.accept()
        protocol.dataReceived(b"HDR 198.51.100.7:1\n" + client_hello("a.example.test"))
        self.assertIs(protocol.state, CONNECTING)
        self.assertEqual(protocol.record.requested_server_name, "a.example.test")
        self.assertEqual(protocol.remote_address, "198.51.100.7:1")

    def test_one_deadline_covers_the_listener_stages(self) -> None:
        h = Harness(TCP, [provide(listener=(HeaderStage(),))], inspect_timeout=2)
        protocol, down = h.accept()
        protocol.dataReceived(b"HDR 1.2")
        h.reactor.advance(2.2)
        self.assertTrue(down.disconnecting)
        self.assertEqual(h.reactor.tcpClients, [])
        self.assertEqual(h.ctx.stats.get("listener.downstream_pre_cx_timeout",
                                         listener="0.0.0.0_31400"), 1)


class DecisionCheckTests(SynchronousTestCase):
    def test_check_sees_the_decision_and_can_refuse(self) -> None:
        seen: list[Any] = []

        def deny(conn: Any, decision: Any) -> Optional[Ending]:
            seen.append((decision.route.name, conn.remote_address))
            return Ending("UAEX", "rbac_access_denied_matched_policy[none]",
                          counter=("rbac.denied", (("listener", "x"),)))

        h = Harness(TCP, [provide(decision=(deny,))])
        protocol, down = h.accept()
        self.assertEqual(seen, [("default/echo#tcp[0]", "127.0.0.9:40001")])
        self.assertEqual(h.reactor.tcpClients, [])
        self.assertTrue(down.disconnecting)
        h.close(protocol)
        record = h.records[0]
        self.assertEqual(record.response_flags, "UAEX")
        self.assertEqual(record.response_code_details, "rbac_access_denied_matched_policy[none]")
        self.assertEqual(record.route_name, "tcp->default/echo#tcp[0]")
        self.assertEqual(h.ctx.stats.get("rbac.denied", listener="x"), 1)
        # nothing was counted against the cluster
        self.assertEqual(h.ctx.stats.get("cluster.upstream_cx_total",
                                         cluster=route().destinations[0].cluster.name), 0)

    def test_checks_run_in_provider_order_and_none_goes_on(self) -> None:
        order: list[str] = []
        h = Harness(TCP, [provide(decision=(lambda c, d: order.append("a"),)),
                          provide(decision=(lambda c, d: order.append("b"),))])
        h.accept()
        self.assertEqual(order, ["a", "b"])
        self.assertEqual(len(h.reactor.tcpClients), 1)

    def test_no_route_never_reaches_the_checks(self) -> None:
        called: list[Any] = []
        h = Harness(TLS, [provide(decision=(lambda c, d: called.append(d),))])
        protocol, down = h.accept()
        protocol.dataReceived(client_hello("other.example.test"))
        self.assertEqual(called, [])
        h.close(protocol)
        self.assertEqual(h.records[0].response_flags, "NR")


class UpstreamStageTests(SynchronousTestCase):
    def test_upstream_stage_writes_before_the_replayed_bytes(self) -> None:
        def header_out(conn: Any, transport: Any) -> None:
            transport.write(f"HDR {conn.remote_address}\n".encode())

        h = Harness(TLS, [provide(upstream=(header_out,))])
        protocol, down = h.accept()
        hello = client_hello("a.example.test")
        protocol.dataReceived(hello)
        upstream, up = h.connect_upstream()
        self.assertEqual(up.value(), b"HDR 127.0.0.9:40001\n" + hello)

    def test_upstream_stage_can_end(self) -> None:
        h = Harness(TCP, [provide(upstream=(lambda c, t: Ending("UF", termination="x"),))])
        protocol, down = h.accept()
        upstream, up = h.connect_upstream()
        self.assertTrue(down.disconnecting and up.disconnecting)
        self.assertIsNot(protocol.state, RELAYING)
        h.close(protocol)
        self.assertEqual(h.records[0].response_flags, "UF")


class ConnectAndCloseHookTests(SynchronousTestCase):
    def test_connect_hook_opens_the_upstream(self) -> None:
        calls: list[Any] = []

        def connect(reactor: Any, cluster: Any, endpoint: Any, factory: Any) -> Any:
            calls.append((cluster.name, endpoint.address, endpoint.port))
            return reactor.connectTCP(endpoint.address, endpoint.port, factory)

        h = Harness(TCP, [provide(connect=connect)])
        h.accept()
        self.assertEqual(calls, [(route().destinations[0].cluster.name, "127.0.0.1", 2701)])

    def test_close_hooks_run_once_before_the_record(self) -> None:
        seen: list[int] = []
        h = Harness(TCP)
        h.ctx.stage_providers.append(provide(close=(lambda c: seen.append(len(h.records)),)))
        protocol, down = h.accept()
        h.connect_upstream()
        h.close(protocol)
        self.assertEqual(seen, [0])
        self.assertEqual(len(h.records), 1)

    def test_providers_are_asked_once_per_listener_not_per_connection(self) -> None:
        asked: list[Listener] = []

        def provider(listener: Listener) -> Stages:
            asked.append(listener)
            return Stages()

        from tsgate.gateway import ListenerFactory

        h = Harness(TCP, [provider])
        factory = ListenerFactory(h.ctx, TCP)
        for _ in range(3):
            factory.buildProtocol(None)
        self.assertEqual(asked, [TCP])
