"""
The relay stage (tsgate.proxy.relay) on the unit-test harness: bytes counted
per direction, activity both ways, half-close, the limits, timed observers.
Each test states the planted bug (a mutant of docs/mutation-report.md, "data
path") it catches.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.logger import Logger
from zope.interface import implementer

from tests.support.proxy import Harness, route
from tsgate.interfaces import ITimedStreamObserverFactory
from tsgate.proxy import relay
from tsgate.proxy.relay import LATENCY_BUCKETS
from tsgate.proxy.state import CONNECTING, RELAYING
from tsgate.routing import Listener

ROUTE = "default/echo#tcp[0]"



def written(transport: Any) -> bytes:
    """What the code under test wrote to a StringTransport (typed for mypy)."""
    return bytes(transport.value())

def tcp(**route_fields: Any) -> Listener:
    return Listener(bind="0.0.0.0", port=31400, tcp_route=route(**route_fields))


def test_bytes_are_counted_per_direction() -> None:
    """
    Client bytes are ``bytes_received``, server bytes ``bytes_sent``, in the
    record and in Istio's counters (planted: one direction not counted, the
    two swapped, a chunk counted as one byte).
    """
    h = Harness(tcp())
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    protocol.dataReceived(b"abc")
    protocol.dataReceived(b"defg")
    upstream.dataReceived(b"01234")
    upstream.dataReceived(b"56789")
    assert (written(up), written(down)) == (b"abcdefg", b"0123456789")
    assert (protocol.bytes_received, protocol.bytes_sent) == (7, 10)
    h.close(protocol)
    record = h.records[0]
    assert (record.bytes_received, record.bytes_sent) == (7, 10)
    assert h.ctx.stats.total("istio_tcp_received_bytes_total") == 7
    assert h.ctx.stats.total("istio_tcp_sent_bytes_total") == 10


def test_client_bytes_read_while_connecting_are_replayed_once_and_counted() -> None:
    """What the client sent before the upstream connected goes first, once, and counts."""
    h = Harness(tcp())
    protocol, down = h.accept()
    protocol.dataReceived(b"early")
    assert protocol.state is CONNECTING
    upstream, up = h.connect_upstream()
    protocol.dataReceived(b"-late")
    assert written(up) == b"early-late"
    assert protocol.buffer == b""
    assert protocol.bytes_received == 10


def test_client_reads_resume_when_the_relay_starts() -> None:
    """
    Reads are paused from the decision until the upstream connects, then
    resumed (planted: the client left paused: nothing would be read again).
    """
    h = Harness(tcp())
    protocol, down = h.accept()
    assert down.producerState == "paused"
    h.connect_upstream()
    assert protocol.state is RELAYING
    assert down.producerState == "producing"


def test_server_only_traffic_is_activity() -> None:
    """
    A stream where only the server talks (a feed, a download) is not idle
    (planted: upstream bytes not counted as activity: cut at the idle
    timeout). Silent both ways, it is cut with Envoy's details.
    """
    h = Harness(tcp(), idle_timeout=60)
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    for _ in range(6):
        h.reactor.advance(30)
        upstream.dataReceived(b"tick")
    assert not down.disconnecting
    h.reactor.advance(59)
    assert not down.disconnecting
    h.reactor.advance(1.5)
    assert down.disconnecting and up.disconnecting
    assert protocol.termination == "idle timeout"
    h.close(protocol)
    assert h.records[0].connection_termination_details == "tcp_session_idle_timeout"
    assert h.ctx.stats.get("tcp.idle_timeout", route=ROUTE) == 1


def test_idle_timeout_comes_from_the_route_unless_the_option_sets_it() -> None:
    """The command line's idle timeout overrides the route's; 0 disables it."""
    h = Harness(tcp(idle_timeout=10))
    protocol, down = h.accept()
    h.connect_upstream()
    assert protocol.idle_timeout == 10
    h.reactor.advance(10.2)
    assert down.disconnecting

    h = Harness(tcp(idle_timeout=10), idle_timeout=0)
    protocol, down = h.accept()
    h.connect_upstream()
    h.reactor.advance(3600)
    assert not down.disconnecting and protocol.idle_timer is None


def test_max_duration_counts_from_accept_not_from_connect() -> None:
    """
    ``maxConnectionDuration`` is the connection's age: time spent connecting
    counts (planted: the deadline measured from the relay's start).
    """
    h = Harness(tcp(max_connection_duration=5.0))
    h.reactor.advance(100)
    protocol, down = h.accept()
    h.reactor.advance(3)
    upstream, up = h.connect_upstream()
    h.reactor.advance(1.8)
    assert not down.disconnecting
    h.reactor.advance(0.4)
    assert down.disconnecting and up.disconnecting


def test_client_fin_while_connecting_is_forwarded_when_the_relay_starts() -> None:
    """
    A client that sends its request and FIN before the upstream connected:
    the request, then the FIN, go upstream; the client is not read again
    and not closed until the server has answered and closed too.
    """
    h = Harness(tcp())
    protocol, down = h.accept()
    protocol.dataReceived(b"request")
    protocol.readConnectionLost()
    assert protocol.client_eof and not down.disconnecting
    upstream, up = h.connect_upstream()
    assert written(up) == b"request" and up.write_closed and up.producer is None
    assert down.producerState == "paused"
    assert not down.disconnecting
    upstream.dataReceived(b"answer")
    assert written(down) == b"answer"
    upstream.readConnectionLost()
    assert down.write_closed and down.producer is None
    assert down.disconnecting and up.disconnecting


def test_server_fin_first_then_client_fin() -> None:
    """Half-close in the other order: the server's FIN first, both closed after the client's."""
    h = Harness(tcp())
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    upstream.readConnectionLost()
    assert down.write_closed and not down.disconnecting
    protocol.dataReceived(b"more")  # the client may still talk
    assert written(up) == b"more"
    protocol.readConnectionLost()
    assert up.write_closed
    assert down.disconnecting and up.disconnecting


def test_no_fin_on_a_transport_already_gone() -> None:
    """A FIN for a side whose socket is already closed is not sent again."""
    h = Harness(tcp())
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    up.connected = False
    protocol.readConnectionLost()
    assert not up.write_closed and up.producer is down
    assert not down.disconnecting


class _TimedObserver:
    def __init__(self, emit: Any, observe: Any, clock: Any) -> None:
        self.emit, self.observe, self.clock = emit, observe, clock
        self.asked_at = 0.0
        self.replies = b""

    def client_data(self, data: bytes) -> None:
        self.asked_at = self.clock()
        self.emit("requests")

    def server_data(self, data: bytes) -> None:
        self.replies += data
        self.emit("replies", 2)
        self.observe("latency_seconds", self.clock() - self.asked_at)

    def attributes(self) -> dict[str, str]:
        return {}


@implementer(ITimedStreamObserverFactory)
class _TimedFactory:
    name = protocol = "timed"
    istio_protocols = ("TIMED",)
    port_name_prefixes = ("timed",)

    def new_observer(self, emit: Any) -> Any:  # pragma: no cover (the timed variant is used)
        raise AssertionError("a timed factory gets new_timed_observer")

    def new_timed_observer(self, emit: Any, observe: Any, clock: Any) -> Any:
        return _TimedObserver(emit, observe, clock)


def test_timed_observer_gets_a_clock_and_a_histogram_per_listener() -> None:
    """
    A timed observer factory gets ``new_timed_observer(emit, observe,
    clock)``; its histograms are ``<protocol>.<name>`` per listener with the
    latency buckets (planted: the timed variant not used, the wrong name,
    label or buckets).
    """
    listener = Listener(bind="0.0.0.0", port=31400, tcp_route=route(), protocols=("TIMED",),
                        port_names=("timed-x",), servers=(("TIMED", "timed-x"),))
    h = Harness(listener)
    h.ctx.observers_for = lambda servers: [_TimedFactory()]
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    protocol.dataReceived(b"ask")
    h.reactor.advance(0.003)
    upstream.dataReceived(b"answer")
    stats = h.ctx.stats
    assert stats.get("timed.requests", listener="0.0.0.0_31400") == 1
    assert stats.get("timed.replies", listener="0.0.0.0_31400") == 2
    (key, hist), = stats.histograms["timed.latency_seconds"].items()
    assert key == (("listener", "0.0.0.0_31400"),)
    assert hist.buckets == LATENCY_BUCKETS and hist.count == 1
    assert abs(hist.sum - 0.003) < 1e-9
    assert (written(up), written(down)) == (b"ask", b"answer")
    assert protocol.observers[0].replies == b"answer"


class _Crashing(_TimedObserver):
    def client_data(self, data: bytes) -> None:
        raise RuntimeError("plugin bug")


def test_crashing_observer_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """An observer that raises is dropped, counted and logged as such (planted: no message)."""
    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(relay, "log", Logger(namespace="tsgate.proxy", observer=observer))
    class Factory(_TimedFactory):
        def new_timed_observer(self, emit: Any, observe: Any, clock: Any) -> Any:
            return _Crashing(emit, observe, clock)

    factory = Factory()
    listener = Listener(bind="0.0.0.0", port=31400, tcp_route=route(), protocols=("TIMED",),
                        port_names=("timed-x",), servers=(("TIMED", "timed-x"),))
    h = Harness(listener)
    h.ctx.observers_for = lambda servers: [factory]
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    protocol.dataReceived(b"ask")
    assert written(up) == b"ask" and protocol.observers == []
    assert h.ctx.stats.get("plugin.observer_crashed", listener="0.0.0.0_31400") == 1
    assert [e["log_format"] for e in events] == [
        "stream observer crashed; dropped for this connection"]


def test_idle_deadline_reached_exactly_closes() -> None:
    """
    Idle for exactly the timeout (the wheel fires on the deadline to the
    float): closed then (planted: ``<=``, which re-arms the check for 0
    seconds, for ever).
    """
    h = Harness(tcp(), idle_timeout=1)
    protocol, down = h.accept()
    h.connect_upstream()
    h.reactor.advance(1.0)
    assert h.reactor.seconds() - protocol.last_activity == protocol.idle_timeout
    assert down.disconnecting


def test_observers_are_chosen_for_the_listeners_servers() -> None:
    """The selector gets the listener's (protocol, port name) servers (planted: given nothing)."""
    asked: list[Any] = []
    listener = Listener(bind="0.0.0.0", port=31400, tcp_route=route(), protocols=("TIMED",),
                        port_names=("timed-x",), servers=(("TIMED", "timed-x"),))
    h = Harness(listener)

    def select(servers: Any) -> list[Any]:
        asked.append(servers)
        return [_TimedFactory()]

    h.ctx.observers_for = select
    protocol, down = h.accept()
    h.connect_upstream()
    assert asked == [(("TIMED", "timed-x"),)]
    assert [type(o) for o in protocol.observers] == [_TimedObserver]
