"""
The close record and the connection's state (tsgate.proxy.record, .state,
.connection) on the unit-test harness: what the access record and the
metrics say at close, addresses, the ways out. Each test states the planted
bug (a mutant of docs/mutation-report.md, "data path") it catches.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import Logger

from tests.support.proxy import LOCAL, PEER, HalfCloseTransport, Harness, route
from tsgate.accesslog import AccessLog
from tsgate.proxy import record
from tsgate.proxy.connection import DownstreamProtocol
from tsgate.proxy.stages import Ending, Stages
from tsgate.proxy.state import CLOSED, format_address
from tsgate.routing import Listener

TCP = Listener(bind="0.0.0.0", port=31400, tcp_route=route())
LISTENER = "0.0.0.0_31400"
CLUSTER_OBJ = route().destinations[0].cluster
CLUSTER = CLUSTER_OBJ.name


def test_format_address() -> None:
    """
    host:port, [v6]:port, a unix socket's path, ``-`` for an unnamed one.
    (Bug found here: Twisted keeps the path as bytes and the access log
    showed ``b'/run/gw.sock'``.)
    """
    assert format_address(IPv4Address("TCP", "10.1.2.3", 80)) == "10.1.2.3:80"
    assert format_address(IPv6Address("TCP", "2001:db8::1", 443)) == "[2001:db8::1]:443"
    assert format_address(UNIXAddress("/run/gw.sock")) == "/run/gw.sock"
    assert format_address(UNIXAddress(b"/run/gw.sock")) == "/run/gw.sock"
    assert format_address(UNIXAddress(None)) == "-"
    assert format_address(object()) == "-"


def test_duration_and_length_histogram_at_close() -> None:
    """
    The record's duration is in whole milliseconds from accept, and the
    listener's connection-length histogram gets the seconds (planted:
    seconds in the record, the histogram fed the wrong value or not at all).
    """
    h = Harness(TCP)
    h.reactor.advance(1000)
    protocol, down = h.accept()
    assert h.ctx.stats.get("listener.downstream_cx_active", listener=LISTENER) == 1
    assert h.ctx.stats.get("listener.downstream_cx_total", listener=LISTENER) == 1
    h.connect_upstream()
    h.reactor.advance(1.5)
    h.close(protocol)
    rec = h.records[0]
    assert rec.duration_ms == 1500
    assert rec.start_time == 1000
    hist = h.ctx.stats.histograms["listener.downstream_cx_length_seconds"][
        (("listener", LISTENER),)]
    assert (hist.count, hist.sum) == (1, 1.5)
    assert h.ctx.stats.get("listener.downstream_cx_active", listener=LISTENER) == 0


def test_upstream_slots_released_at_close() -> None:
    """The cluster's and the host's active counts drop back when the connection closes."""
    h = Harness(TCP)
    protocol, down = h.accept()
    h.connect_upstream()
    state = h.ctx.balancer.state(CLUSTER_OBJ)
    host, = h.ctx.balancer.hosts(CLUSTER_OBJ)
    assert (state.active, host.active) == (1, 1)
    h.close(protocol)
    assert (state.active, host.active) == (0, 0)
    assert h.ctx.stats.get("cluster.upstream_cx_active", cluster=CLUSTER) == 0


def test_byte_counters_flush_deltas_only() -> None:
    """
    A periodic flush adds the bytes since the last one; at close only the
    rest is added (planted: totals added twice, the flush doing nothing).
    """
    h = Harness(TCP)
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    protocol.dataReceived(b"12345")
    upstream.dataReceived(b"12")
    protocol.flush_byte_counters()
    stats = h.ctx.stats
    assert (stats.total("istio_tcp_received_bytes_total"),
            stats.total("istio_tcp_sent_bytes_total")) == (5, 2)
    protocol.flush_byte_counters()  # nothing new: nothing added
    protocol.dataReceived(b"678")
    h.close(protocol)
    assert (stats.total("istio_tcp_received_bytes_total"),
            stats.total("istio_tcp_sent_bytes_total")) == (8, 2)
    key = h.ctx.balancer.state(CLUSTER_OBJ).metric_key()
    assert stats.counters["istio_tcp_received_bytes_total"] == {key: 8}


def test_a_connection_without_a_cluster_flushes_nothing() -> None:
    """No route, no cluster: no byte counters (there are no labels to put them under)."""
    h = Harness(Listener(bind="0.0.0.0", port=31400))
    protocol, down = h.accept()
    protocol.bytes_received = 3
    protocol.flush_byte_counters()
    assert "istio_tcp_received_bytes_total" not in h.ctx.stats.counters


def test_close_hooks_run_first_and_a_crash_costs_only_a_log_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashing close hook is logged; the next hook and the record still happen."""
    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(record, "log", Logger(namespace="tsgate.proxy", observer=observer))
    seen: list[Any] = []

    def crash(conn: Any) -> None:
        raise RuntimeError("hook bug")

    def note(conn: Any) -> None:
        seen.append((conn.state, len(h.records)))

    h = Harness(TCP, [lambda listener: Stages(close=(crash, note))])
    protocol, down = h.accept()
    h.close(protocol)
    assert seen == [(CLOSED, 0)]
    assert len(h.records) == 1
    assert [e["log_format"] for e in events] == ["close hook crashed"]


def test_observer_attributes_that_raise_are_left_out() -> None:
    h = Harness(TCP)
    protocol, down = h.accept()
    h.connect_upstream()

    class Broken:
        def attributes(self) -> dict[str, str]:
            raise ValueError("bug")

    class Fine:
        def attributes(self) -> dict[str, Any]:
            return {"user": "sam", "rows": 3, "none": None}

    protocol.observers = [Broken(), Fine()]
    h.close(protocol)
    assert h.records[0].hints == {"user": "sam", "rows": "3"}


def test_addresses_only_when_the_access_log_is_read() -> None:
    """
    Without an access log the addresses are not formatted at accept (``-``);
    with one, local and peer are the socket's (planted: local and remote
    swapped).
    """
    h = Harness(TCP)
    protocol, down = h.accept()
    assert (protocol.record.downstream_local_address,
            protocol.record.downstream_remote_address) == ("127.0.0.1:31400", "127.0.0.9:40001")

    h = Harness(TCP)
    h.ctx.access_log = AccessLog(None)
    protocol, down = h.accept()
    assert (protocol.record.downstream_local_address,
            protocol.record.downstream_remote_address) == ("-", "-")
    assert protocol.peer_address == "127.0.0.9:40001"  # still known, formatted when asked


def test_close_gracefully_keeps_the_reason_and_closes_both_sides() -> None:
    """Drain: both sides closed after flushing, the reason in the record."""
    h = Harness(TCP)
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    protocol.close_gracefully("drain")
    assert down.disconnecting and up.disconnecting
    assert down.producer is None and up.producer is None
    assert protocol.termination == "drain"
    h.close(protocol)
    assert h.records[0].connection_termination_details == "drain"


def test_client_fin_while_connecting_waits_for_the_relay() -> None:
    """The client's FIN before the upstream connected is remembered, not forwarded, not fatal."""
    h = Harness(TCP)
    protocol, down = h.accept()
    protocol.readConnectionLost()
    protocol.writeConnectionLost()
    assert protocol.client_eof and not down.disconnecting
    assert len(h.reactor.tcpClients) == 1


def test_every_timer_is_cancelled_at_close() -> None:
    """Idle and duration deadlines are gone once the connection is (planted: one left armed)."""
    h = Harness(Listener(bind="0.0.0.0", port=1, tcp_route=route(
        idle_timeout=60, max_connection_duration=600)))
    protocol, down = h.accept()
    h.connect_upstream()
    assert protocol.idle_timer is not None and protocol.duration_timer is not None
    idle, duration = protocol.idle_timer, protocol.duration_timer
    h.close(protocol)
    assert (protocol.idle_timer, protocol.duration_timer) == (None, None)
    assert not idle.active() and not duration.active()
    assert h.ctx.timers.pending == 0


def test_a_later_verdict_without_a_field_keeps_the_earlier_one() -> None:
    """
    Two verdicts before the close (two limits in one timer bucket): a field
    the later one leaves at ``-`` keeps the earlier value (planted: ``-``
    written over it).
    """
    h = Harness(TCP)
    protocol, down = h.accept()
    protocol.end(Ending("NR", "filter_chain_not_found", "first_termination"))
    protocol.end(Ending(why="again"))
    record_ = protocol.record
    assert (record_.response_flags, record_.response_code_details,
            record_.connection_termination_details) == (
        "NR", "filter_chain_not_found", "first_termination")
    assert protocol.termination == "again"


def test_an_undecodable_unix_path_is_still_text() -> None:
    assert format_address(UNIXAddress(b"/run/\xff.sock")) == "/run/\ufffd.sock"


class Tcp(HalfCloseTransport):
    no_delay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def test_accept_tunes_the_socket_and_tracks_the_connection() -> None:
    """
    TCP_NODELAY on and the relay's read size for the client socket; the
    connection is listed (admin, drain) until it closes (planted: each lost).
    """
    h = Harness(TCP, read_size=8192)
    protocol: Any = DownstreamProtocol(h.ctx, h.listener)
    transport: Any = Tcp(hostAddress=LOCAL, peerAddress=PEER)
    protocol.makeConnection(transport)
    assert transport.no_delay is True and transport.bufferSize == 8192
    assert h.ctx.connections == {protocol}
    h.close(protocol)
    assert h.ctx.connections == set()


def test_close_gracefully_before_the_upstream_connected() -> None:
    """Drain while connecting: the client is closed; there is no upstream to close."""
    h = Harness(TCP)
    protocol, down = h.accept()
    protocol.close_gracefully("shutdown")
    assert down.disconnecting and protocol.upstream is None
