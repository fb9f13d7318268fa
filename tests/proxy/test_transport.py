"""
The lean transport, port and connector on real loopback sockets, driven by a
small select() loop that provides IReactorFDSet (no global reactor).
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any, Callable

import pytest
from twisted.internet import defer, error
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorFDSet
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from zope.interface import implementer

from tests.support.net import Blackhole
from tsgate.proxy.dial import lean_connect
from tsgate.proxy.listen import ACCEPT_BATCH, lean_listen, max_backlog
from tsgate.proxy.transport import LeanTransport
from tsgate.routing import Endpoint, Listener

TCP = Listener(bind="127.0.0.1", port=1)


@implementer(IReactorFDSet)
class SelectReactor:
    def __init__(self) -> None:
        self.readers: set[Any] = set()
        self.writers: set[Any] = set()
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def addReader(self, r: Any) -> None:
        self.readers.add(r)

    def removeReader(self, r: Any) -> None:
        self.readers.discard(r)

    def addWriter(self, w: Any) -> None:
        self.writers.add(w)

    def removeWriter(self, w: Any) -> None:
        self.writers.discard(w)

    def getReaders(self) -> list[Any]:
        return list(self.readers)

    def getWriters(self) -> list[Any]:
        return list(self.writers)

    def removeAll(self) -> list[Any]:
        everything = list(self.readers | self.writers)
        self.readers.clear()
        self.writers.clear()
        return everything

    def seconds(self) -> float:
        return time.monotonic()

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        self.calls.append((f, args))

    def turn(self, timeout: float = 0.05) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)
        r, w, _ = select.select(list(self.readers), list(self.writers), [], timeout)
        for x in r:
            if x in self.readers:
                x.doRead()
        for x in w:
            if x in self.writers:
                x.doWrite()

    def until(self, condition: Callable[[], bool], seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            self.turn()


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.events: list[str] = []
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def readConnectionLost(self) -> None:
        self.events.append("read-lost")

    def writeConnectionLost(self) -> None:
        self.events.append("write-lost")

    def connectionLost(self, reason: Any) -> None:
        self.events.append("lost:" + type(reason.value).__name__)


class Producer:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


def pair(reactor: SelectReactor) -> tuple[LeanTransport, Recorder, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    transport = LeanTransport(a, reactor)
    protocol = Recorder()
    transport.start(protocol)
    return transport, protocol, b


def test_reads_and_writes_through() -> None:
    reactor = SelectReactor()
    transport, protocol, peer = pair(reactor)
    assert protocol.made and transport in reactor.readers
    peer.sendall(b"hello")
    reactor.until(lambda: protocol.data == b"hello")
    transport.write(b"back")
    assert transport.queued == 0 and not reactor.writers  # sent at once
    assert peer.recv(10) == b"back"


def test_queue_pauses_and_resumes_the_producer() -> None:
    reactor = SelectReactor()
    transport, protocol, peer = pair(reactor)
    transport.bufferSize = 1024
    producer = Producer()
    transport.registerProducer(producer, True)
    chunk = b"x" * 65536
    while "pause" not in producer.events:
        transport.write(chunk)
    assert transport in reactor.writers and transport.queued > 1024
    total = transport.queued
    got = 0
    peer.setblocking(False)
    while "resume" not in producer.events:
        try:
            got += len(peer.recv(1 << 20))
        except BlockingIOError:
            pass
        reactor.turn(0.01)
    assert transport.queued == 0 and transport not in reactor.writers
    assert got >= total


def test_half_close_both_ways() -> None:
    reactor = SelectReactor()
    transport, protocol, peer = pair(reactor)
    peer.shutdown(socket.SHUT_WR)
    reactor.until(lambda: "read-lost" in protocol.events)
    assert transport.connected and transport not in reactor.readers
    transport.write(b"last")
    transport.loseWriteConnection()
    assert protocol.events == ["read-lost", "write-lost"]
    assert peer.recv(10) == b"last" and peer.recv(10) == b""


def test_lose_connection_flushes_then_reports_once_later() -> None:
    reactor = SelectReactor()
    transport, protocol, peer = pair(reactor)
    transport.write(b"bye")
    transport.loseConnection()
    assert protocol.events == []  # never inside the caller's stack
    reactor.until(lambda: bool(protocol.events))
    transport.loseConnection()
    reactor.turn(0.01)
    assert protocol.events == ["lost:ConnectionDone"]
    assert peer.recv(10) == b"bye" and peer.recv(10) == b""


def test_peer_close_stops_the_registered_producer() -> None:
    reactor = SelectReactor()
    transport, protocol, peer = pair(reactor)
    producer = Producer()
    transport.registerProducer(producer, True)
    peer.close()
    transport.write(b"x" * 100000)  # EPIPE/ECONNRESET, reported on a later turn
    reactor.until(lambda: bool(protocol.events))
    assert protocol.events[-1].startswith("lost:") and producer.events[-1] == "stop"


class Built(ServerFactory):
    def __init__(self) -> None:
        self.protocols: list[Recorder] = []

    def buildProtocol(self, addr: Any) -> Recorder:
        assert addr is None  # no address object per connection
        protocol = Recorder()
        self.protocols.append(protocol)
        return protocol


def test_port_accepts_a_batch_per_event() -> None:
    reactor = SelectReactor()
    factory = Built()
    port = lean_listen(reactor, factory, 0, "127.0.0.1")
    assert port is not None
    address = port.getHost()
    clients = [socket.create_connection((address.host, address.port)) for _ in range(3)]
    time.sleep(0.05)
    port.doRead()
    assert len(factory.protocols) == 3 and all(p.made for p in factory.protocols)
    assert factory.protocols[0].transport.getPeer().port == clients[0].getsockname()[1]
    port.doRead()  # nothing pending: EAGAIN, no error
    port.stopListening()
    assert port not in reactor.readers
    for c in clients:
        c.close()
    assert ACCEPT_BATCH >= 16 and max_backlog() >= 128


class Dialed(ClientFactory):
    def __init__(self) -> None:
        self.protocol = Recorder()
        self.failed: list[Any] = []

    def buildProtocol(self, addr: Any) -> Recorder:
        return self.protocol

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.failed.append(reason)


def test_connect_and_refused_connect() -> None:
    reactor = SelectReactor()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    ok = Dialed()
    lean_connect(reactor, None, Endpoint("127.0.0.1", port), ok)
    reactor.until(lambda: ok.protocol.made)
    assert ok.protocol.transport.getPeer().port == port
    server.close()  # now nothing listens there
    refused = Dialed()
    lean_connect(reactor, None, Endpoint("127.0.0.1", port), refused)
    reactor.until(lambda: bool(refused.failed))
    assert refused.failed[0].check(error.ConnectionRefusedError)


def test_stop_connecting_reports_a_user_error() -> None:
    reactor = SelectReactor()
    dialed = Dialed()
    with Blackhole() as (host, port):  # the connect stays in progress
        connector = lean_connect(reactor, None, Endpoint(host, port), dialed)
        connector.stopConnecting()
    assert dialed.failed and dialed.failed[0].check(error.UserError)
    assert not reactor.writers


def test_plain_reactors_get_connect_tcp() -> None:
    class Plain:
        def seconds(self) -> float:  # IReactorTime, as ProxyContext wants
            return 0.0

    from tsgate.proxy.context import ProxyContext, Settings
    from tsgate.proxy.stages import connect_tcp

    lean = Settings(lean=True)
    assert ProxyContext(reactor=Plain(), settings=lean).runtime(TCP).connect is connect_tcp
    assert ProxyContext(reactor=SelectReactor(), settings=lean).runtime(TCP).connect \
        is lean_connect
    assert ProxyContext(reactor=SelectReactor()).runtime(TCP).connect is connect_tcp
    assert lean_listen(Plain(), Built(), 0, "127.0.0.1") is None


class Resolving(SelectReactor):
    def __init__(self, names: dict[str, str]) -> None:
        super().__init__()
        self.names = names
        self.pending: list[Any] = []

    def resolve(self, name: str) -> Any:
        d: defer.Deferred[str] = defer.Deferred()
        self.pending.append((d, name))
        return d

    def answer(self) -> None:
        for d, name in self.pending:
            if name in self.names:
                d.callback(self.names[name])
            else:
                d.errback(error.DNSLookupError(name))
        self.pending = []


def test_host_names_are_resolved_then_connected() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        reactor = Resolving({"backend.test": "127.0.0.1"})
        ok, unknown, stopped = Dialed(), Dialed(), Dialed()
        port = server.getsockname()[1]
        lean_connect(reactor, None, Endpoint("backend.test", port), ok)
        lean_connect(reactor, None, Endpoint("nowhere.test", port), unknown)
        connector = lean_connect(reactor, None, Endpoint("backend.test", port), stopped)
        connector.stopConnecting()  # before the answer: reported once, as a UserError
        reactor.answer()
        reactor.until(lambda: ok.protocol.made)
        assert unknown.failed[0].check(error.DNSLookupError)
        assert len(stopped.failed) == 1 and stopped.failed[0].check(error.UserError)
        assert not stopped.protocol.made
    finally:
        server.close()


@pytest.mark.parametrize("description,expected", [
    ("tcp:port=80:interface=0.0.0.0:backlog=4096", (80, "0.0.0.0", 4096)),
    ("tcp:0:interface=127.0.0.1", (0, "127.0.0.1", None)),
    ("tcp6:port=80:interface=\\:\\:1", (80, "::1", None)),
    ("unix:/run/x.sock", None),
    ("tcp:80:reuse=true", None),
    ("systemd:domain=INET:index=0", None),
])
def test_which_endpoints_get_the_lean_port(description: str, expected: Any) -> None:
    from tsgate.gateway import plain_tcp

    assert plain_tcp(description) == expected


def test_read_now_reads_what_is_waiting_without_a_turn() -> None:
    reactor = SelectReactor()
    transport, protocol, peer = pair(reactor)
    transport.pauseProducing()
    peer.sendall(b"early")
    time.sleep(0.01)
    transport.read_now()  # paused: nothing read
    assert protocol.data == b""
    transport.resumeProducing()
    transport.read_now()
    assert protocol.data == b"early"
    transport.read_now()  # nothing waiting: EAGAIN, no error
    assert transport.connected and protocol.events == []
