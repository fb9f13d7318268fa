"""
The upstream-connect stage (tsgate.proxy.upstream) on the unit-test harness:
the connect, its timeout and failures (UF, DF, URX), what a connected
upstream gets, races with the client's close. Each test states the planted
bug (a mutant of docs/mutation-report.md, "data path") it catches.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address
from twisted.logger import Logger
from twisted.python.failure import Failure

from tests.support.proxy import LOCAL, HalfCloseTransport, Harness, cluster, route
from tsgate.proxy import timers
from tsgate.proxy.connection import DownstreamProtocol
from tsgate.proxy.state import CLOSED, CONNECTING, RELAYING
from tsgate.proxy.upstream import UpstreamProtocol, source_ip
from tsgate.routing import Cluster, Endpoint, Listener
from tsgate.upstream.balancer import Balancer
from tsgate.upstream.policy import ClusterPolicy

CLUSTER = cluster().name
TCP = Listener(bind="0.0.0.0", port=31400, tcp_route=route())


def written(transport: Any) -> bytes:
    """What the code under test wrote to a StringTransport (typed for mypy)."""
    return bytes(transport.value())


def fail(h: Harness, reason: Exception, index: int = -1) -> None:
    factory: Any = h.reactor.tcpClients[index][2]
    factory.clientConnectionFailed(None, Failure(reason))


def test_source_ip_only_when_the_cluster_hashes_on_it() -> None:
    """The client's IP (no port, no brackets) for a source-IP hash; else None."""
    hashing = SimpleNamespace(policy=SimpleNamespace(hash_source_ip=True))
    other = SimpleNamespace(policy=SimpleNamespace(hash_source_ip=False))
    for remote, ip in (("198.51.100.7:5555", "198.51.100.7"), ("[2001:db8::1]:443", "2001:db8::1"),
                       ("-", None)):
        conn = SimpleNamespace(remote_address=remote)
        assert source_ip(conn, hashing) == ip
        assert source_ip(conn, other) is None
        assert source_ip(conn, SimpleNamespace(policy=None)) is None


def test_the_connect_goes_to_the_endpoint_with_no_reactor_timeout() -> None:
    """connectTCP to the picked endpoint, without Twisted's own timeout (ours is on the wheel)."""
    h = Harness(TCP)
    protocol, down = h.accept()
    (host, port, factory, timeout, bind), = h.reactor.tcpClients
    assert (host, port) == ("127.0.0.1", 2701)
    assert timeout is None
    assert protocol.state is CONNECTING
    assert protocol.record.upstream_host == "127.0.0.1:2701"
    assert protocol.record.upstream_cluster == CLUSTER
    assert h.ctx.stats.get("cluster.upstream_cx_total", cluster=CLUSTER) == 1
    assert h.ctx.stats.get("cluster.upstream_cx_active", cluster=CLUSTER) == 1


def test_the_option_overrides_the_cluster_connect_timeout() -> None:
    """``--connect-timeout`` wins over the DestinationRule's connectTimeout."""
    listener = Listener(bind="0.0.0.0", port=1, tcp_route=route(
        cluster=cluster(connect_timeout=30.0)))
    h = Harness(listener, connect_timeout=2.0)
    protocol, down = h.accept()
    h.reactor.advance(1.9)
    assert not down.disconnecting
    h.reactor.advance(0.3)
    assert down.disconnecting
    connector = h.reactor.connectors[0]
    assert connector.stoppedConnecting


def test_connect_timeout_is_uf_with_the_reason_and_an_error_line() -> None:
    """
    A connect that times out: UF, counted as a timeout and a failure, the
    reason one token in the record, one line in the recent errors (planted:
    the detail, the counters or the error line lost).
    """
    h = Harness(TCP)
    protocol, down = h.accept()
    h.reactor.advance(10.2)
    stats = h.ctx.stats
    assert stats.get("cluster.upstream_cx_connect_timeout", cluster=CLUSTER) == 1
    assert stats.get("cluster.upstream_cx_connect_fail", cluster=CLUSTER) == 1
    message = f"{CLUSTER} 127.0.0.1:2701: connect timeout"
    assert [m for _, m in h.ctx.recent_errors] == [message]
    state = h.ctx.balancer.state(route().destinations[0].cluster)
    assert [m for _, m in state.recent_errors] == [message]
    h.close(protocol)
    record = h.records[0]
    assert (record.response_flags, record.upstream_transport_failure_reason) == (
        "UF", "connect_timeout")


def test_refused_is_uf_with_twisteds_message_as_one_token() -> None:
    h = Harness(TCP)
    protocol, down = h.accept()
    fail(h, ierror.ConnectionRefusedError('said "no"'))
    h.close(protocol)
    record = h.records[0]
    assert record.response_flags == "UF"
    reason = record.upstream_transport_failure_reason
    assert " " not in reason and '"' not in reason and "'no'" in reason
    assert h.ctx.stats.get("cluster.upstream_cx_connect_timeout", cluster=CLUSTER) == 0
    assert h.ctx.stats.get("cluster.upstream_cx_active", cluster=CLUSTER) == 0


def test_a_name_that_does_not_resolve_is_df() -> None:
    """Envoy's DF (dns_resolution_failure), not UF (planted: every failure UF)."""
    h = Harness(TCP)
    protocol, down = h.accept()
    fail(h, ierror.DNSLookupError("no such host"))
    h.close(protocol)
    record = h.records[0]
    assert (record.response_flags, record.upstream_transport_failure_reason) == (
        "DF", "dns_resolution_failed")
    assert h.ctx.stats.get("cluster.upstream_cx_connect_fail", cluster=CLUSTER) == 1


def test_our_own_stop_connecting_is_not_a_failure() -> None:
    """The UserError Twisted reports after stopConnecting() is ignored."""
    h = Harness(TCP)
    protocol, down = h.accept()
    fail(h, ierror.UserError())
    assert not down.disconnecting and protocol.state is CONNECTING


def test_failure_after_the_client_left_is_not_counted() -> None:
    """
    The client closed while connecting: the connect is stopped, and a late
    failure neither counts nor logs (planted: the CLOSED check dropped).
    """
    h = Harness(TCP)
    protocol, down = h.accept()
    h.close(protocol)
    assert h.reactor.connectors[0].stoppedConnecting
    fail(h, ierror.ConnectionRefusedError())
    assert h.ctx.stats.get("cluster.upstream_cx_connect_fail", cluster=CLUSTER) == 0
    assert list(h.ctx.recent_errors) == []
    assert [r.response_flags for r in h.records] == ["-"]


def test_connected_after_the_client_left_closes_the_upstream() -> None:
    """An upstream that connects after the client closed is closed, not relayed."""
    h = Harness(TCP)
    protocol, down = h.accept()
    h.close(protocol)
    upstream, up = h.connect_upstream()
    assert up.disconnecting
    assert protocol.upstream is None and protocol.state is CLOSED


class NoDelay(HalfCloseTransport):
    """A TCP transport: remembers TCP_NODELAY (StringTransport has no such call)."""

    no_delay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


class NoDelayRefused(HalfCloseTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:
        raise OSError("not a TCP socket")


def connect_with(h: Harness, transport: HalfCloseTransport) -> Any:
    factory: Any = h.reactor.tcpClients[-1][2]
    upstream = factory.buildProtocol(None)
    upstream.makeConnection(transport)
    return upstream


def test_connected_upstream_is_tuned_and_counted() -> None:
    """
    The upstream socket gets TCP_NODELAY and the relay's read size, its
    local address is logged, Istio counts it opened (planted: any of these
    dropped); a socket that refuses TCP_NODELAY still relays.
    """
    h = Harness(TCP, read_size=4096)
    protocol, down = h.accept()
    up: Any = NoDelay()
    upstream = connect_with(h, up)
    assert up.no_delay and up.bufferSize == 4096
    assert protocol.upstream is upstream and protocol.state is RELAYING
    assert h.ctx.stats.total("istio_tcp_connections_opened_total") == 1
    h.close(protocol)
    assert h.records[0].upstream_local_address == "10.0.0.1:12345"

    h = Harness(TCP)
    protocol, down = h.accept()
    connect_with(h, NoDelayRefused())
    assert protocol.state is RELAYING


def test_upstream_fin_is_forwarded_and_its_close_closes_the_client() -> None:
    """
    The upstream's FIN becomes the client's; the upstream fully gone closes
    the client after flushing, with no producer left registered.
    """
    h = Harness(TCP)
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    upstream.dataReceived(b"bye")
    upstream.readConnectionLost()
    assert down.write_closed and written(down) == b"bye"
    upstream.writeConnectionLost()  # nothing to do
    upstream.connectionLost(Failure(ierror.ConnectionDone()))
    assert down.disconnecting and down.producer is None


def test_upstream_gone_after_the_client_is_ignored() -> None:
    h = Harness(TCP)
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    h.close(protocol)
    down.disconnecting = False
    upstream.connectionLost(Failure(ierror.ConnectionDone()))
    assert not down.disconnecting


def test_attempts_count_retries_and_log_each_failure() -> None:
    """
    tsgate.io/connect-attempts: each retry counted, each failure an error
    line naming its host; out of attempts, UF,URX and the attempts-exceeded
    counter (planted: the counters or the host in the message lost).
    """
    two = Cluster(name="outbound|80||two", host="two", port=80,
                  endpoints=(Endpoint("127.0.0.1", 1000), Endpoint("127.0.0.1", 1001)),
                  policy=ClusterPolicy(connect_attempts=2))
    h = Harness(Listener(bind="0.0.0.0", port=31400, tcp_route=route(cluster=two)))
    protocol, down = h.accept()
    fail(h, ierror.ConnectionRefusedError(), 0)
    assert len(h.reactor.tcpClients) == 2 and not down.disconnecting
    assert protocol.state is CONNECTING
    assert h.ctx.stats.get("cluster.upstream_cx_connect_attempts", cluster=two.name) == 1
    fail(h, ierror.ConnectionRefusedError(), 1)
    assert down.disconnecting
    assert h.ctx.stats.get("cluster.upstream_cx_connect_attempts_exceeded",
                           cluster=two.name) == 1
    hosts = sorted(m.split()[1] for _, m in h.ctx.recent_errors)
    assert hosts == ["127.0.0.1:1000:", "127.0.0.1:1001:"]
    h.close(protocol)
    assert h.records[0].response_flags == "UF,URX"


def test_a_single_attempt_is_plain_uf() -> None:
    """Without connect-attempts > 1 a failure is UF alone (no URX, no exceeded counter)."""
    one = Cluster(name="outbound|80||one", host="one", port=80,
                  endpoints=(Endpoint("127.0.0.1", 1000),), policy=ClusterPolicy())
    h = Harness(Listener(bind="0.0.0.0", port=31400, tcp_route=route(cluster=one)))
    protocol, down = h.accept()
    fail(h, ierror.ConnectionRefusedError())
    h.close(protocol)
    assert h.records[0].response_flags == "UF"
    assert h.ctx.stats.get("cluster.upstream_cx_connect_attempts_exceeded", cluster=one.name) == 0


def test_upstream_protocol_before_the_relay_ignores_stray_bytes() -> None:
    """Bytes from an upstream before the relay (not negotiating) are not relayed."""
    h = Harness(TCP)
    protocol, down = h.accept()
    upstream = UpstreamProtocol(protocol)
    upstream.dataReceived(b"early")
    assert upstream.reply == b"" and written(down) == b""




def hashed(endpoints: int, **policy: Any) -> Listener:
    pol = ClusterPolicy(lb="RING_HASH", hash_source_ip=True, **policy)
    c = Cluster(name="outbound|80||hashed", host="hashed", port=80, policy=pol,
                lb_policy=pol.lb,
                endpoints=tuple(Endpoint("127.0.0.1", 1000 + i) for i in range(endpoints)))
    return Listener(bind="0.0.0.0", port=31400, tcp_route=route(cluster=c))


def accept_from(h: Harness, ip: str) -> tuple[Any, HalfCloseTransport]:
    protocol: Any = DownstreamProtocol(h.ctx, h.listener)
    transport = HalfCloseTransport(hostAddress=LOCAL, peerAddress=IPv4Address("TCP", ip, 40000))
    protocol.makeConnection(transport)
    return protocol, transport


def test_source_ip_hash_keeps_a_client_on_one_host() -> None:
    """
    consistentHash.useSourceIp: the client's IP picks the host, the same
    each time, and different clients spread (planted: no source given to
    the balancer, so a random host per connection).
    """
    h = Harness(hashed(4))
    h.ctx.balancer = Balancer(seed=1, clock=h.reactor.seconds)
    picks: dict[str, list[int]] = {}
    for i in range(12):
        ip = f"10.0.{i}.{i + 1}"
        for _ in range(3):
            accept_from(h, ip)
            picks.setdefault(ip, []).append(h.reactor.tcpClients[-1][1])
    assert all(len(set(ports)) == 1 for ports in picks.values()), picks
    assert len({ports[0] for ports in picks.values()}) > 1


def test_a_retry_skips_the_host_that_failed_and_follows_the_hash() -> None:
    """
    connect-attempts with a source-IP hash: the retry never goes back to the
    host that failed, and goes to the same next host for the same client
    (planted: the tried hosts not remembered; no source for the retry).
    """
    h = Harness(hashed(3, connect_attempts=2))
    h.ctx.balancer = Balancer(seed=1, clock=h.reactor.seconds)
    for i in range(8):
        ip = f"10.1.{i}.{i + 1}"
        seen = []
        for _ in range(2):
            accept_from(h, ip)
            first = h.reactor.tcpClients[-1][1]
            fail(h, ierror.ConnectionRefusedError())
            retry = h.reactor.tcpClients[-1][1]
            assert retry != first
            seen.append((first, retry))
        assert seen[0] == seen[1], (ip, seen)


def test_cluster_not_found_is_nc_with_envoys_details() -> None:
    missing = Cluster(name="outbound|80|v9|h", host="h", port=80, subset="v9", missing=True)
    h = Harness(Listener(bind="0.0.0.0", port=31400, tcp_route=route(cluster=missing)))
    protocol, down = h.accept()
    assert down.disconnecting
    h.close(protocol)
    record = h.records[0]
    assert (record.response_flags, record.response_code_details) == ("NC", "cluster_not_found")
    assert h.ctx.stats.get("tcp.downstream_cx_no_route", route="default/echo#tcp[0]") == 1


def test_active_and_total_per_cluster_and_the_overflow_counter() -> None:
    """
    The cluster's active and total counts follow connections; at
    maxConnections the next one is UO, counted per cluster (planted: the
    counts set instead of added, the overflow counter misnamed or unlabelled).
    """
    limited = cluster(max_connections=2)
    h = Harness(Listener(bind="0.0.0.0", port=31400, tcp_route=route(cluster=limited)))
    state = h.ctx.balancer.state(limited)
    first, _ = h.accept()
    second, _ = h.accept()
    assert (state.active, state.total) == (2, 2)
    third, down = h.accept()
    assert down.disconnecting
    assert h.ctx.stats.get("cluster.upstream_cx_overflow", cluster=limited.name) == 1
    h.close(third)
    h.close(first)
    assert (state.active, state.total) == (1, 2)
    h.accept()
    assert (state.active, state.total) == (2, 3)
    assert h.records[0].response_flags == "UO"


def test_a_success_resets_the_hosts_consecutive_failures() -> None:
    """Outlier detection counts failures in a row: a connect that succeeds starts again."""
    two = Cluster(name="outbound|80||two", host="two", port=80,
                  endpoints=(Endpoint("127.0.0.1", 1000),), policy=ClusterPolicy())
    h = Harness(Listener(bind="0.0.0.0", port=31400, tcp_route=route(cluster=two)))
    h.accept()
    fail(h, ierror.ConnectionRefusedError())
    host, = h.ctx.balancer.hosts(two)
    assert host.consecutive_failures == 1
    h.accept()
    h.connect_upstream()
    assert host.consecutive_failures == 0


def test_connect_deadline_after_the_client_was_closed_does_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The client was closed while connecting (the connect stopped) and the
    connect deadline fires before the close is reported: nothing happens,
    no error (planted: ``or`` for ``and``).
    """
    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(timers, "log", Logger(namespace="tsgate.timers", observer=observer))
    h = Harness(TCP)
    protocol, down = h.accept()
    protocol.abort()
    assert h.reactor.connectors[0].stoppedConnecting and protocol.state is CONNECTING
    h.reactor.advance(10.2)
    assert events == []
    assert h.ctx.stats.get("cluster.upstream_cx_connect_timeout", cluster=CLUSTER) == 0
