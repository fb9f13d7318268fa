"""
The lean sockets' own epoll set (tsgate.proxy.poller.EpollLoop) on real
loopback sockets, inside a private Twisted epoll reactor driven turn by turn
(no global reactor, no reactor.run()).
"""

from __future__ import annotations

import os
import select
import socket
import time
from typing import Any, Callable

import pytest
from twisted.internet import error
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from tests.proxy.test_transport import Producer, Recorder
from tests.support.net import Blackhole
from tsgate.proxy.dial import lean_connect
from tsgate.proxy.poller import EpollLoop, ReactorLoop, loop_for
from tsgate.proxy.transport import LeanTransport
from tsgate.routing import Endpoint

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")


@pytest.fixture
def reactor() -> Any:
    from twisted.internet.epollreactor import EPollReactor

    r = EPollReactor()
    yield r
    for selectable in r.removeAll():
        selectable.connectionLost(Failure(error.ConnectionDone()))


def turn(reactor: Any, timeout: float = 0.05) -> None:
    reactor.runUntilCurrent()
    reactor.doIteration(timeout)


def until(reactor: Any, condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        turn(reactor)


def pair(reactor: Any) -> tuple[LeanTransport, Recorder, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    transport = LeanTransport(a, reactor)
    protocol = Recorder()
    transport.start(protocol)
    return transport, protocol, b


def test_twisted_poll_reactors_get_one_epoll_for_every_lean_socket(reactor: Any) -> None:
    loop = loop_for(reactor)
    assert isinstance(loop, EpollLoop) and loop_for(reactor) is loop
    transport, protocol, peer = pair(reactor)
    other, _, _ = pair(reactor)
    # the reactor watches the loop only; the loop watches both sockets
    readers = reactor.getReaders()
    assert loop in readers and transport not in readers and other not in readers
    assert set(loop.handlers.values()) == {transport, other}
    peer.sendall(b"hello")
    until(reactor, lambda: protocol.data == b"hello")


def test_other_reactors_watch_each_socket_themselves() -> None:
    from tests.proxy.test_transport import SelectReactor

    fake = SelectReactor()
    assert isinstance(loop_for(fake), ReactorLoop)


def test_backpressure_and_half_close_through_the_loop(reactor: Any) -> None:
    transport, protocol, peer = pair(reactor)
    producer = Producer()
    transport.registerProducer(producer, True)
    transport.bufferSize = 1024
    big = b"x" * (4 << 20)
    transport.write(big)  # more than the socket buffers take: queued, producer paused
    assert transport.writing and producer.events == ["pause"]
    got = 0
    peer.setblocking(False)
    deadline = time.monotonic() + 10
    while got < len(big):
        assert time.monotonic() < deadline
        turn(reactor, 0.01)
        try:
            got += len(peer.recv(1 << 20))
        except BlockingIOError:
            pass
    until(reactor, lambda: transport.queued == 0 and not transport.writing)
    assert producer.events == ["pause", "resume"]
    peer.shutdown(socket.SHUT_WR)
    until(reactor, lambda: "read-lost" in protocol.events)
    assert transport.connected and not transport.reading
    transport.loseWriteConnection()
    assert peer.recv(10) == b""  # our FIN
    transport.loseConnection()
    until(reactor, lambda: any(e.startswith("lost:") for e in protocol.events))
    assert protocol.events == ["read-lost", "write-lost", "lost:ConnectionDone"]
    assert transport.fd not in loop_for(reactor).handlers


def test_a_peer_hanging_up_while_paused_waits_until_resumed(reactor: Any) -> None:
    transport, protocol, peer = pair(reactor)
    transport.pauseProducing()
    peer.close()
    for _ in range(5):  # no busy loop, no event for a socket nothing is asked of
        turn(reactor, 0.01)
    assert protocol.events == []
    assert transport.fd not in loop_for(reactor).kernel  # the hang-up unwatched it
    transport.resumeProducing()
    until(reactor, lambda: bool(protocol.events))
    assert protocol.events == ["read-lost"]


def test_a_number_reused_within_one_batch_gets_no_stale_event(reactor: Any) -> None:
    """
    A hang-up reported for a socket closed earlier in the same batch must not
    reach the socket that took its number meanwhile (it would be closed).
    """
    reused: list[tuple[int, LeanTransport, Recorder]] = []

    class Closer(Recorder):
        def dataReceived(self, data: bytes) -> None:
            # close the hung-up socket, whose event is later in this batch,
            # and open one with its number
            number = hung.fd
            hung.connectionLost(Failure(error.ConnectionDone()))  # closed now
            a, b = socket.socketpair()
            peers.append(b)
            if a.fileno() != number:  # give it the closed socket's number, now free
                os.dup2(a.fileno(), number)
                a.close()
                a = socket.socket(fileno=number)
            a.setblocking(False)
            transport = LeanTransport(a, reactor)
            recorder = Recorder()
            transport.start(recorder)
            reused.append((number, transport, recorder))

    peers: list[socket.socket] = []
    a, first_peer = socket.socketpair()
    a.setblocking(False)
    LeanTransport(a, reactor).start(Closer())
    b, hung_peer = socket.socketpair()
    b.setblocking(False)
    hung = LeanTransport(b, reactor)
    hung.start(Recorder())
    hung.pauseProducing()
    hung.write(b"x" * (1 << 20))  # more than the socket takes: writing, not reading
    turn(reactor, 0.01)  # the interest changes reach the epoll set
    assert hung.writing and not hung.reading
    first_peer.sendall(b"a")
    time.sleep(0.01)
    hung_peer.close()  # a hang-up (no read asked: a disconnect event)
    time.sleep(0.01)  # both ready before the turn: one batch, the read first
    until(reactor, lambda: bool(reused))
    turn(reactor, 0.01)
    number, transport, recorder = reused[0]
    assert recorder.events == [] and transport.connected
    assert transport.fd == number


def test_connect_refused_and_stopped_through_the_loop(reactor: Any) -> None:
    class Dialed(ClientFactory):
        def __init__(self) -> None:
            self.protocol_made: Any = None
            self.failed: list[Any] = []

        def buildProtocol(self, addr: Any) -> Protocol:
            recorder = Recorder()
            self.protocol_made = recorder
            return recorder

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            self.failed.append(reason)

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    ok = Dialed()
    lean_connect(reactor, None, Endpoint("127.0.0.1", port), ok)
    until(reactor, lambda: ok.protocol_made is not None and ok.protocol_made.made)
    accepted, _ = server.accept()
    accepted.sendall(b"ready")
    until(reactor, lambda: ok.protocol_made.data == b"ready")
    server.close()
    refused = Dialed()
    lean_connect(reactor, None, Endpoint("127.0.0.1", port), refused)
    until(reactor, lambda: bool(refused.failed))
    assert refused.failed[0].check(error.ConnectionRefusedError)
    stopped = Dialed()
    with Blackhole() as (host, port):  # the connect stays in progress
        connector = lean_connect(reactor, None, Endpoint(host, port), stopped)
        connector.stopConnecting()
    assert stopped.failed[0].check(error.UserError)
    assert connector.fd not in loop_for(reactor).handlers
    accepted.close()


def test_reactor_shutdown_reaches_every_lean_socket(reactor: Any) -> None:
    transport, protocol, peer = pair(reactor)
    loop = loop_for(reactor)
    for selectable in reactor.removeAll():
        selectable.connectionLost(Failure(error.ConnectionLost()))
    assert protocol.events == ["lost:ConnectionLost"] and not transport.connected
    assert loop_for(reactor) is not loop  # a new loop if the reactor runs again


def test_a_connect_complete_when_connect_returns_is_handed_over_at_once(reactor: Any) -> None:
    from tests.proxy.test_transport import Dialed

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    near = Dialed()
    recorder: Any = near.protocol
    connector = lean_connect(reactor, None, Endpoint("127.0.0.1", server.getsockname()[1]), near)
    # loopback answers the SYN inside connect(): no turn, no writability wait
    assert recorder.made and not connector.pending
    assert connector.fd not in loop_for(reactor).handlers or \
        loop_for(reactor).handlers[connector.fd] is recorder.transport
    far = Dialed()
    with Blackhole() as (host, port):  # a full accept queue: the SYN gets no answer
        pending = lean_connect(reactor, None, Endpoint(host, port), far)
        assert pending.pending and not far.failed
        assert loop_for(reactor).handlers[pending.fd] is pending  # waits for writability
        pending.stopConnecting()
    recorder.transport.loseConnection()
    server.close()


def test_a_close_asked_for_in_a_batch_happens_at_its_end(reactor: Any) -> None:
    events: list[str] = []

    class Closing(Recorder):
        def dataReceived(self, data: bytes) -> None:
            assert self.transport is not None
            self.transport.loseConnection()
            events.append("asked")  # not lost within loseConnection

        def connectionLost(self, reason: Any = None) -> None:
            events.append("lost")

    a, peer = socket.socketpair()
    a.setblocking(False)
    LeanTransport(a, reactor).start(Closing())
    peer.sendall(b"x")
    until(reactor, lambda: bool(events))
    assert events == ["asked", "lost"]  # the same turn: no timer, no writability event
    assert reactor.getDelayedCalls() == []
    assert peer.recv(10) == b""
