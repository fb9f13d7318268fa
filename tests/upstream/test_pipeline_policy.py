"""
The traffic-policy pieces as plugged into the pipeline, with a memory reactor:
the PROXY-in listener stage, PROXY out, outlier ejection and connect attempts
in the upstream-connect stage.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error as ierror
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.support.proxy import Harness, route
from tsgate import proxy_protocol
from tsgate.proxy.state import CLOSED, INSPECTING, RELAYING
from tsgate.routing import Cluster, Endpoint, Listener, SniChain
from tsgate.upstream.balancer import Balancer
from tsgate.upstream.policy import ClusterPolicy, OutlierSettings


def listener(mode: str, trusted: str = "", tls: bool = False, **kwargs: Any) -> Listener:
    annotations = [("tsgate.io/proxy-protocol", mode)]
    if trusted:
        annotations.append(("tsgate.io/proxy-protocol-trusted-cidrs", trusted))
    chains = (SniChain(("a.example.test",), route("default/a#tls[0]")),) if tls else ()
    return Listener(bind="0.0.0.0", port=31400, tcp_route=route(**kwargs), tls_chains=chains,
                    annotations=tuple(annotations))


def harness(lst: Listener, **settings: Any) -> Harness:
    h = Harness(lst, [proxy_protocol.stage_provider], **settings)
    h.ctx.balancer = Balancer(seed=1, clock=h.reactor.seconds)
    return h


class ProxyInTests(SynchronousTestCase):
    def test_v2_header_names_the_client_and_the_rest_is_replayed(self) -> None:
        h = harness(listener("required", "127.0.0.0/8"))
        protocol, _ = h.accept()
        header = proxy_protocol.encode_v2(("203.0.113.5", 4444), ("198.51.100.1", 443))
        protocol.dataReceived(header[:10])
        self.assertEqual(h.reactor.tcpClients, [])
        protocol.dataReceived(header[10:] + b"hello")
        self.assertEqual(protocol.remote_address, "203.0.113.5:4444")
        _, up = h.connect_upstream()
        self.assertEqual(up.value(), b"hello")
        h.close(protocol)
        record = h.records[0]
        self.assertEqual(record.downstream_remote_address, "203.0.113.5:4444")
        self.assertEqual(record.downstream_peer_address, "127.0.0.9:40001")
        self.assertEqual(record.downstream_local_address, "198.51.100.1:443")

    def test_untrusted_peer_on_a_required_listener_is_closed_at_accept(self) -> None:
        h = harness(listener("required", "10.0.0.0/8"))
        protocol, down = h.accept()
        self.assertTrue(down.disconnecting)
        h.close(protocol)
        self.assertEqual(h.records[0].connection_termination_details, "proxy_protocol_untrusted")
        self.assertIn("PROXY protocol refused from 127.0.0.9:40001", h.ctx.recent_errors[0][1])

    def test_missing_header_when_required(self) -> None:
        h = harness(listener("required"))
        protocol, down = h.accept()
        protocol.dataReceived(b"\x16\x03\x01\x00\x05hello")
        self.assertTrue(down.disconnecting)
        self.assertEqual(h.reactor.tcpClients, [])
        counters = h.ctx.stats.counters
        self.assertIn("listener.proxy_proto.not_found_disallowed", counters)
        self.assertIn("listener.downstream_cx_proxy_proto_error", counters)

    def test_optional_without_header_goes_on_with_the_bytes(self) -> None:
        h = harness(listener("optional"))
        protocol, _ = h.accept()
        protocol.dataReceived(b"PING\r\n")
        _, up = h.connect_upstream()
        self.assertEqual(up.value(), b"PING\r\n")
        self.assertEqual(protocol.remote_address, "127.0.0.9:40001")

    def test_timeouts(self) -> None:
        # optional, nothing sent (a server-first client): served without a header
        h = harness(listener("optional"), inspect_timeout=2.0)
        protocol, _ = h.accept()
        h.reactor.advance(2.5)
        self.assertEqual(len(h.reactor.tcpClients), 1)
        # required: refused; and a partial header is refused even when optional
        for mode, data in (("required", b""), ("optional", b"PROXY TCP4 1.2")):
            h = harness(listener(mode), inspect_timeout=2.0)
            protocol, down = h.accept()
            if data:
                protocol.dataReceived(data)
            h.reactor.advance(2.5)
            self.assertTrue(down.disconnecting, mode)
            self.assertEqual(h.reactor.tcpClients, [])

    def test_required_on_a_tls_listener_cannot_fall_through_to_the_tcp_route(self) -> None:
        h = harness(listener("required", tls=True), inspect_timeout=2.0)
        protocol, down = h.accept()
        self.assertIs(protocol.state, INSPECTING)
        h.reactor.advance(2.5)
        self.assertTrue(down.disconnecting)
        self.assertEqual(h.reactor.tcpClients, [])


def policy_route(endpoints: int = 2, **policy: Any) -> Any:
    pol = ClusterPolicy(**policy)
    cluster = Cluster(name="c", host="h", port=80, policy=pol, lb_policy=pol.lb,
                      endpoints=tuple(Endpoint("127.0.0.1", 1000 + i) for i in range(endpoints)))
    return route(cluster=cluster)


class UpstreamPolicyTests(SynchronousTestCase):
    def fail(self, h: Harness, index: int = -1) -> None:
        connector_factory = h.reactor.tcpClients[index][2]
        connector_factory.clientConnectionFailed(None, Failure(ierror.ConnectionRefusedError()))

    def test_proxy_out_header_is_written_first(self) -> None:
        lst = Listener(bind="0.0.0.0", port=31400,
                       tcp_route=policy_route(1, proxy_protocol="V1"))
        h = harness(lst)
        protocol, _ = h.accept()
        _, up = h.connect_upstream()
        self.assertEqual(up.value(), b"PROXY TCP4 127.0.0.9 127.0.0.1 40001 31400\r\n")
        self.assertIs(protocol.state, RELAYING)

    def test_connect_attempts_try_the_other_endpoint(self) -> None:
        lst = Listener(bind="0.0.0.0", port=31400,
                       tcp_route=policy_route(2, lb="ROUND_ROBIN", connect_attempts=2))
        h = harness(lst)
        protocol, _ = h.accept()
        first = h.reactor.tcpClients[0][1]
        self.fail(h)
        self.assertEqual(len(h.reactor.tcpClients), 2)
        self.assertNotEqual(h.reactor.tcpClients[1][1], first)
        h.connect_upstream()
        self.assertIs(protocol.state, RELAYING)
        hosts = {host.port: host.active for host in h.ctx.balancer.hosts(
            lst.tcp_route.destinations[0].cluster)}
        self.assertEqual(sorted(hosts.values()), [0, 1])  # only the live one is active
        h.close(protocol)
        self.assertEqual(sorted(hosts), [1000, 1001])

    def test_out_of_attempts_is_uf_urx(self) -> None:
        lst = Listener(bind="0.0.0.0", port=31400,
                       tcp_route=policy_route(2, connect_attempts=2))
        h = harness(lst)
        protocol, _ = h.accept()
        self.fail(h, 0)
        self.fail(h, 1)
        self.assertEqual(len(h.reactor.tcpClients), 2)
        h.close(protocol)
        self.assertEqual(h.records[0].response_flags, "UF,URX")
        self.assertIs(protocol.state, CLOSED)

    def test_a_failure_ejects_and_no_later_connection_goes_there(self) -> None:
        od = OutlierSettings(consecutive_5xx_errors=1, max_ejection_percent=100)
        lst = Listener(bind="0.0.0.0", port=31400,
                       tcp_route=policy_route(2, lb="ROUND_ROBIN", outlier=od))
        h = harness(lst)
        protocol, _ = h.accept()
        dead = h.reactor.tcpClients[0][1]  # the port
        self.fail(h, 0)
        h.close(protocol)
        self.assertEqual(h.records[0].response_flags, "UF")
        for _ in range(6):
            p, _ = h.accept()
            h.close(p)
        later = {c[1] for c in h.reactor.tcpClients[1:]}
        self.assertEqual(len(later), 1)
        self.assertNotEqual(later, {dead})
