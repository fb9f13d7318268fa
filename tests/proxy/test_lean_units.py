"""
The lean transport's rules one by one, on a scripted socket and a loop that
records every change of interest (unit logic: how much ``send`` takes, what
``recv`` returns and which errors come are chosen by the test). The same
behaviours on real loopback sockets are in test_transport.py and
test_lean_sockets.py. Each test's docstring names the bug it catches.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Callable, Optional, cast

import pytest
from twisted.internet import error
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from tests.proxy.test_transport import Producer, Recorder
from tsgate.proxy.poller import ReactorLoop
from tsgate.proxy.transport import LeanTransport


class Sock:
    """A scripted socket: ``budget`` bytes per send (None: all), ``reads`` to return."""

    family = socket.AF_INET

    def __init__(self, fd: int = 7) -> None:
        self.fd = fd
        self.budget: Optional[int] = None
        self.send_error: Optional[OSError] = None
        self.sent: list[bytes] = []
        self.reads: list[Any] = []
        self.recv_sizes: list[int] = []
        self.shut: list[int] = []
        self.shut_error: Optional[OSError] = None
        self.closed = 0
        self.close_error: Optional[OSError] = None
        self.peer: Any = ("10.0.0.9", 4321)
        self.options: dict[tuple[int, int], int] = {}

    def fileno(self) -> int:
        return self.fd

    def send(self, data: bytes) -> int:
        if self.send_error is not None:
            raise self.send_error
        n = len(data) if self.budget is None else min(self.budget, len(data))
        if self.budget is not None:
            self.budget -= n
        self.sent.append(bytes(data[:n]))
        return n

    def recv(self, size: int) -> bytes:
        self.recv_sizes.append(size)
        item = self.reads.pop(0)
        if isinstance(item, BaseException):
            raise item
        return bytes(item)

    def shutdown(self, how: int) -> None:
        self.shut.append(how)
        if self.shut_error is not None:
            raise self.shut_error

    def close(self) -> None:
        self.closed += 1
        if self.close_error is not None:
            raise self.close_error

    def getpeername(self) -> Any:
        if isinstance(self.peer, BaseException):
            raise self.peer
        return self.peer

    def getsockname(self) -> Any:
        return ("10.0.0.1", 80)

    def setsockopt(self, level: int, name: int, value: Any) -> None:
        self.options[(level, name)] = int(value)

    def getsockopt(self, level: int, name: int) -> int:
        return self.options.get((level, name), 0)


class Reactor:
    """Records interest (as sets and as a log) and ``callLater(0, ...)`` calls."""

    def __init__(self) -> None:
        self.readers: set[Any] = set()
        self.writers: set[Any] = set()
        self.log: list[str] = []
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def addReader(self, d: Any) -> None:
        self.log.append("+r")
        self.readers.add(d)

    def removeReader(self, d: Any) -> None:
        self.log.append("-r")
        self.readers.discard(d)

    def addWriter(self, d: Any) -> None:
        self.log.append("+w")
        self.writers.add(d)

    def removeWriter(self, d: Any) -> None:
        self.log.append("-w")
        self.writers.discard(d)

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        assert delay == 0
        self.calls.append((f, args))

    def run_calls(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


def made(protocol: Any = None, sock: Optional[Sock] = None,
         peer: Any = None) -> tuple[LeanTransport, Any, Sock, Reactor]:
    reactor = Reactor()
    sock = sock or Sock()
    transport = LeanTransport(sock, reactor, peer, ReactorLoop(reactor))  # type: ignore[arg-type]
    protocol = protocol if protocol is not None else Recorder()
    transport.start(protocol)
    return transport, protocol, sock, reactor


def errno_error(code: int) -> OSError:
    return OSError(code, "scripted")


# -- start ---------------------------------------------------------------------


def test_start_reads_and_uses_the_default_loop_of_the_reactor() -> None:
    """Catches: not reading after start; the loop not taken from the reactor when none is given."""
    reactor = Reactor()
    transport = LeanTransport(Sock(), reactor)  # type: ignore[arg-type]
    protocol = Recorder()
    transport.start(protocol)
    assert protocol.made and protocol.transport is transport
    assert reactor.readers == {transport} and reactor.log == ["+r"]
    assert transport.fileno() == 7 and transport.connected == 1
    assert not transport.disconnecting and not transport.disconnected


class PausesAtOnce(Recorder):
    def connectionMade(self) -> None:
        cast(Any, self.transport).pauseProducing()


class ClosesAtOnce(Recorder):
    def connectionMade(self) -> None:
        cast(Any, self.transport).loseConnection()


def test_start_does_not_read_for_a_protocol_that_paused_or_closed_in_connection_made() -> None:
    """Catches: ``and`` → ``or`` (or a dropped test) in start's reading condition."""
    transport, _, _, reactor = made(PausesAtOnce())
    assert reactor.readers == set() and not transport.reading
    transport.resumeProducing()
    assert reactor.readers == {transport}
    transport, _, _, reactor = made(ClosesAtOnce())
    assert reactor.readers == set() and "+r" not in reactor.log


def test_a_plain_protocol_gets_connection_done_at_the_peers_fin() -> None:
    """Catches: half-close assumed for a protocol without IHalfCloseableProtocol."""
    class Plain(Protocol):
        reasons: list[Any] = []

        def connectionLost(self, reason: Any = None) -> None:
            self.reasons.append(reason)

    protocol = Plain()
    transport, _, sock, reactor = made(protocol)
    sock.reads.append(b"")
    transport.doRead()
    assert [r.type for r in protocol.reasons] == [error.ConnectionDone]
    assert sock.closed == 1 and transport.disconnected


# -- reading -------------------------------------------------------------------


def test_read_size_is_the_buffer_size_and_data_is_delivered() -> None:
    """Catches: ``recv`` with another size; data not passed on; EAGAIN treated as an error."""
    transport, protocol, sock, _ = made()
    sock.reads += [b"abc", errno_error(errno.EAGAIN), errno_error(errno.EINTR), b"de"]
    for _ in range(4):
        transport.doRead()
    assert protocol.data == b"abcde" and sock.recv_sizes == [65536] * 4
    assert protocol.events == [] and transport.connected


def test_a_read_error_is_connection_lost_with_the_message() -> None:
    """Catches: a read error ignored, or reported as a clean close."""
    transport, protocol, sock, reactor = made()
    sock.reads.append(errno_error(errno.ECONNRESET))
    transport.doRead()
    assert protocol.events == ["lost:ConnectionLost"]
    assert sock.closed == 1 and reactor.readers == set()


def test_fin_stops_reading_and_tells_a_half_closeable_protocol() -> None:
    """Catches: reading kept after FIN; ``read_closed`` not set (resume would read again)."""
    transport, protocol, sock, reactor = made()
    sock.reads.append(b"")
    transport.doRead()
    assert protocol.events == ["read-lost"] and reactor.readers == set()
    assert transport.connected and transport.read_closed
    transport.resumeProducing()
    assert reactor.readers == set()


class FailsOnReadLost(Recorder):
    def readConnectionLost(self) -> None:
        raise RuntimeError("boom")


def test_read_connection_lost_raising_closes_with_that_error() -> None:
    """Catches: an exception in readConnectionLost swallowed (the connection left half open)."""
    transport, protocol, sock, _ = made(FailsOnReadLost())
    sock.reads.append(b"")
    transport.doRead()
    assert protocol.events == ["lost:RuntimeError"] and sock.closed == 1


def test_read_now_reads_only_while_reading() -> None:
    """Catches: read_now reading while paused (or not at all)."""
    transport, protocol, sock, _ = made()
    transport.pauseProducing()
    transport.read_now()
    assert sock.recv_sizes == []
    transport.resumeProducing()
    sock.reads.append(b"x")
    transport.read_now()
    assert protocol.data == b"x"


# -- writing -------------------------------------------------------------------


def test_a_write_the_socket_takes_whole_queues_nothing() -> None:
    """Catches: writes queued although sent; empty writes sent."""
    transport, _, sock, reactor = made()
    transport.write(b"hello")
    transport(b"!")  # the relay's write function is the transport itself
    transport.write(b"")
    transport.writeSequence([b"a", b"b"])
    assert sock.sent == [b"hello", b"!", b"ab"]
    assert transport.queue is None and transport.queued == 0 and reactor.writers == set()


def test_a_partial_send_queues_the_rest_in_order() -> None:
    """Catches: the unsent tail miscut (``data[sent:]``); the count off; writes not watched."""
    transport, _, sock, reactor = made()
    sock.budget = 3
    transport.write(b"abcdef")
    transport.write(b"gh")
    assert sock.sent == [b"abc"] and transport.queued == 5
    assert reactor.writers == {transport}
    sock.budget = 2
    transport.doWrite()  # one send for all that is queued
    assert sock.sent[-1] == b"de" and transport.queued == 3 and reactor.writers == {transport}
    sock.budget = None
    transport.doWrite()
    assert b"".join(sock.sent) == b"abcdefgh"
    assert transport.queue is None and transport.queued == 0 and reactor.writers == set()


def test_a_write_that_fails_at_once_is_queued_then_reported_by_do_write() -> None:
    """Catches: a send error in write raising, or dropping the bytes; doWrite's error ignored."""
    transport, protocol, sock, reactor = made()
    sock.send_error = errno_error(errno.EAGAIN)
    transport.write(b"abc")
    assert transport.queued == 3 and reactor.writers == {transport}
    transport.doWrite()  # EAGAIN again: nothing lost
    assert transport.connected and transport.queued == 3
    sock.send_error = errno_error(errno.EPIPE)
    transport.doWrite()
    assert protocol.events == ["lost:ConnectionLost"] and transport.queued == 0


def test_the_producer_is_paused_above_the_high_water_mark_not_at_it() -> None:
    """Catches: ``queued > bufferSize`` → ``>=``; the 64 KiB mark changed; paused twice."""
    transport, _, sock, _ = made()
    producer = Producer()
    transport.registerProducer(producer, True)
    sock.budget = 0
    transport.write(b"x" * 65536)
    assert producer.events == []
    transport.write(b"y")
    transport.write(b"z")
    assert producer.events == ["pause"]
    sock.budget = None
    transport.doWrite()
    assert producer.events == ["pause", "resume"] and transport.queued == 0
    transport.doWrite()  # nothing queued: not resumed again
    assert producer.events == ["pause", "resume"]


def test_register_producer_pauses_at_once_when_already_over_the_mark() -> None:
    """Catches: a producer registered on a full queue left running; non-streaming accepted."""
    transport, _, sock, _ = made()
    transport.bufferSize = 4
    sock.budget = 0
    transport.write(b"12345")
    producer = Producer()
    transport.registerProducer(producer, True)
    assert producer.events == ["pause"]
    with pytest.raises(ValueError):
        transport.registerProducer(Producer(), False)
    other = Producer()
    transport.unregisterProducer()
    transport.registerProducer(other, True)
    transport.unregisterProducer()
    sock.budget = None
    transport.doWrite()
    assert other.events == ["pause"]  # unregistered: not resumed


def test_writes_after_close_or_half_close_are_dropped() -> None:
    """Catches: the write guards (closed, write side closing or closed) inverted or dropped."""
    transport, _, sock, _ = made()
    sock.budget = 0
    transport.write(b"a")
    transport.loseWriteConnection()
    transport.write(b"b")  # write side closing
    assert transport.queued == 1
    sock.budget = None
    transport.doWrite()
    assert sock.shut == [socket.SHUT_WR]
    transport.write(b"c")  # write side closed
    assert b"".join(sock.sent) == b"a"
    transport, _, sock, _ = made()
    transport.connectionLost(Failure(error.ConnectionDone()))
    transport.write(b"d")
    assert sock.sent == []


# -- closing -------------------------------------------------------------------


def test_lose_connection_with_nothing_queued_closes_on_the_next_turn() -> None:
    """Catches: the close done within the caller's call, or never; reading kept; closed twice."""
    transport, protocol, sock, reactor = made()
    transport.loseConnection()
    assert protocol.events == [] and reactor.readers == set() and transport.disconnecting
    transport.loseConnection()
    assert len(reactor.calls) == 1
    reactor.run_calls()
    assert protocol.events == ["lost:ConnectionDone"] and sock.closed == 1
    transport.close_if_flushed()
    transport.loseConnection()
    assert protocol.events == ["lost:ConnectionDone"] and sock.closed == 1


def test_lose_connection_flushes_the_queue_first() -> None:
    """Catches: close before the queue is sent; bytes written before the due close dropped."""
    transport, protocol, sock, reactor = made()
    sock.budget = 1
    transport.write(b"abc")
    transport.loseConnection()
    assert reactor.writers == {transport} and reactor.calls == []
    sock.budget = None
    transport.doWrite()
    assert b"".join(sock.sent) == b"abc" and protocol.events == ["lost:ConnectionDone"]
    # a due close waits for bytes written after loseConnection was asked
    transport, protocol, sock, reactor = made()
    transport.loseConnection()
    transport.queue = [b"late"]
    reactor.run_calls()
    assert protocol.events == []


def test_abort_drops_the_queue_and_closes_on_writability() -> None:
    """Catches: abort flushing queued bytes, not stopping reads, or acting when closed."""
    transport, protocol, sock, reactor = made()
    sock.budget = 0
    transport.write(b"abc")
    transport.abortConnection()
    assert transport.queue is None and transport.queued == 0
    assert reactor.readers == set() and reactor.writers == {transport}
    transport.doWrite()
    assert sock.sent == [b""] and protocol.events == ["lost:ConnectionDone"]
    transport.abortConnection()
    assert reactor.writers == set()


def test_lose_write_connection_sends_fin_after_the_queue() -> None:
    """Catches: FIN before the queued bytes; SHUT_RD/RDWR; writeConnectionLost missing; twice."""
    transport, protocol, sock, _ = made()
    sock.budget = 1
    transport.write(b"ab")
    transport.loseWriteConnection()
    assert sock.shut == [] and protocol.events == []
    sock.budget = None
    transport.doWrite()
    assert sock.shut == [socket.SHUT_WR] and protocol.events == ["write-lost"]
    assert transport.write_closed and not transport.write_closing
    transport.loseWriteConnection()
    assert sock.shut == [socket.SHUT_WR]
    assert transport.connected


def test_lose_write_connection_on_a_closed_transport_does_nothing() -> None:
    """Catches: the ``not self.connected`` guard dropped."""
    transport, _, sock, _ = made()
    transport.connectionLost(Failure(error.ConnectionDone()))
    transport.loseWriteConnection()
    assert sock.shut == []


class FailsOnWriteLost(Recorder):
    def writeConnectionLost(self) -> None:
        raise RuntimeError("boom")


def test_shutdown_errors_and_write_connection_lost_errors_are_contained() -> None:
    """Catches: an OSError from shutdown, or the protocol's exception, escaping the transport."""
    transport, protocol, sock, _ = made(FailsOnWriteLost())
    sock.shut_error = errno_error(errno.ENOTCONN)
    transport.loseWriteConnection()
    assert transport.write_closed and transport.connected and protocol.events == []


class FailsOnLost(Recorder):
    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        raise RuntimeError("boom")


def test_lost_closes_once_stops_the_producer_and_forgets_the_descriptor() -> None:
    """Catches: _lost running twice; the producer not stopped; fd kept; close errors escaping."""
    sock = Sock()
    sock.close_error = errno_error(errno.EBADF)
    transport, protocol, sock, reactor = made(FailsOnLost(), sock)
    producer = Producer()
    transport.registerProducer(producer, True)
    sock.budget = 0
    transport.write(b"q")
    transport.connectionLost(Failure(error.ConnectionLost()))
    transport.connectionLost(Failure(error.ConnectionDone()))
    assert protocol.events == ["lost:ConnectionLost"] and producer.events == ["stop"]
    assert sock.closed == 1 and transport.fd == -1 and transport.producer is None
    assert transport.queue is None and transport.queued == 0
    assert reactor.readers == set() and reactor.writers == set()
    assert not transport.reading and not transport.writing and transport.connected == 0


def test_stop_producing_is_lose_connection() -> None:
    """Catches: stopProducing not closing."""
    transport, protocol, _, reactor = made()
    transport.stopProducing()
    reactor.run_calls()
    assert protocol.events == ["lost:ConnectionDone"]


def test_resume_after_close_asked_does_not_read() -> None:
    """Catches: resumeProducing's guards (disconnecting, closed) dropped."""
    transport, _, _, reactor = made()
    transport.loseConnection()
    transport.resumeProducing()
    assert reactor.readers == set()
    transport, _, _, reactor = made()
    transport.connectionLost(Failure(error.ConnectionDone()))
    transport.resumeProducing()
    assert reactor.readers == set()


def test_interest_is_changed_only_when_it_changes() -> None:
    """Catches: add/remove called although already (not) watching (a syscall each on epoll)."""
    transport, _, sock, reactor = made()
    transport.pauseProducing()
    transport.pauseProducing()
    transport.resumeProducing()
    transport.resumeProducing()
    sock.budget = 0
    transport.write(b"a")
    transport.write(b"b")
    sock.budget = None
    transport.doWrite()
    assert reactor.log == ["+r", "-r", "+r", "+w", "-w"]


# -- addresses and options -------------------------------------------------------


def test_peer_from_accept_or_asked_once_or_a_placeholder() -> None:
    """Catches: the accepted peer ignored; getpeername's error escaping; the result not kept."""
    transport, _, sock, _ = made(peer=("192.0.2.7", 5555))
    assert (transport.getPeer().host, transport.getPeer().port) == ("192.0.2.7", 5555)
    transport, _, sock, _ = made()
    assert (transport.getPeer().host, transport.getPeer().port) == ("10.0.0.9", 4321)
    sock.peer = OSError(errno.ENOTCONN, "gone")
    assert transport.getPeer().port == 4321  # kept from the first ask
    transport, _, sock, _ = made()
    sock.peer = OSError(errno.ENOTCONN, "gone")
    peer = transport.getPeer()
    assert (peer.type, peer.host, peer.port) == ("TCP", "0.0.0.0", 0)
    host = transport.getHost()
    assert (host.host, host.port) == ("10.0.0.1", 80)


def test_tcp_options_on_a_real_socket() -> None:
    """Catches: TCP_NODELAY / SO_KEEPALIVE set or read at the wrong level or name."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        reactor = Reactor()
        transport = LeanTransport(accepted, reactor, None, ReactorLoop(reactor))
        transport.start(Recorder())
        transport.setTcpNoDelay(True)
        assert transport.getTcpNoDelay() is True
        transport.setTcpNoDelay(False)
        assert transport.getTcpNoDelay() is False
        transport.setTcpKeepAlive(True)
        assert transport.getTcpKeepAlive() is True
        assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        transport.setTcpKeepAlive(False)
        assert transport.getTcpKeepAlive() is False
        assert transport.logPrefix() == "tsgate"
        transport.connectionLost(Failure(error.ConnectionDone()))
    finally:
        client.close()
        server.close()


class Reasons(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[Any] = []

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        self.reasons.append(reason)


def test_a_socket_error_is_reported_with_its_message() -> None:
    """Catches: ConnectionLost built without the OSError's text (a read or a write error)."""
    transport, protocol, sock, _ = made(Reasons())
    sock.reads.append(OSError(errno.ECONNRESET, "reset by the peer"))
    transport.doRead()
    transport2, protocol2, sock2, _ = made(Reasons())
    sock2.budget = 0
    transport2.write(b"x")
    sock2.send_error = OSError(errno.EPIPE, "broken pipe here")
    transport2.doWrite()
    assert "reset by the peer" in protocol.reasons[0].getErrorMessage()
    assert "broken pipe here" in protocol2.reasons[0].getErrorMessage()


def test_the_loop_given_is_the_one_used() -> None:
    """Catches: a loop passed in (the port's, the connector's) replaced by the reactor's."""
    reactor = Reactor()
    loop = ReactorLoop(Reactor())
    transport = LeanTransport(Sock(), reactor, None, loop)  # type: ignore[arg-type]
    transport.start(Recorder())
    assert transport.loop is loop and reactor.readers == set()


def test_lose_connection_after_the_peer_reset_does_nothing() -> None:
    """Catches: ``not connected or disconnecting`` → ``and`` (a close for a closed socket)."""
    transport, protocol, sock, reactor = made()
    sock.reads.append(errno_error(errno.ECONNRESET))
    transport.doRead()
    transport.loseConnection()
    assert reactor.calls == [] and not transport.disconnecting


def test_ipv6_addresses_are_ipv6_objects() -> None:
    """Catches: the socket's family not passed (an IPv6 peer shown as an IPv4Address)."""
    from twisted.internet.address import IPv6Address

    sock = Sock()
    sock.family = socket.AF_INET6
    sock.peer = ("2001:db8::1", 443, 0, 0)
    sock.getsockname = lambda: ("2001:db8::2", 80, 0, 0)  # type: ignore[method-assign]
    transport, _, _, _ = made(sock=sock)
    assert isinstance(transport.getPeer(), IPv6Address)
    assert isinstance(transport.getHost(), IPv6Address)


def test_register_producer_at_the_mark_exactly_and_resumed_after() -> None:
    """Catches: ``>=`` for ``>``; a producer paused at register never resumed; the error text."""
    transport, _, sock, _ = made()
    transport.bufferSize = 4
    sock.budget = 0
    transport.write(b"1234")
    at_mark = Producer()
    transport.registerProducer(at_mark, True)
    assert at_mark.events == []
    transport.write(b"5")
    over = Producer()
    transport.registerProducer(over, True)
    assert over.events == ["pause"]
    sock.budget = None
    transport.doWrite()
    assert over.events == ["pause", "resume"]
    with pytest.raises(ValueError, match="^LeanTransport takes streaming producers only$"):
        transport.registerProducer(Producer(), False)


def test_protocol_errors_are_logged_with_what_failed(monkeypatch: Any) -> None:
    """Catches: the error lines' messages lost or changed (what an operator greps for)."""
    from twisted.logger import Logger

    from tsgate.proxy import transport as module

    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(module, "log", Logger(namespace="tsgate.proxy", observer=observer))

    class Failing(Recorder):
        def readConnectionLost(self) -> None:
            raise RuntimeError("read")

        def writeConnectionLost(self) -> None:
            raise RuntimeError("write")

        def connectionLost(self, reason: Any = None) -> None:
            raise RuntimeError("lost")

    transport, _, sock, _ = made(Failing())
    transport.loseWriteConnection()
    sock.reads.append(b"")
    transport.doRead()
    assert [e["log_format"] for e in events] == [
        "writeConnectionLost failed", "readConnectionLost failed", "connectionLost failed"]


def test_partial_sends_on_a_real_socket_arrive_whole_and_in_order() -> None:
    """
    Catches: a partial send's tail miscut or reordered on a real socket (a
    tiny SO_SNDBUF makes most sends partial); the close after the queue not
    waiting for it.
    """
    from tests.proxy.test_transport import SelectReactor

    a, peer = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.setblocking(False)
    peer.setblocking(False)
    reactor = SelectReactor()
    transport = LeanTransport(a, reactor)
    protocol = Recorder()
    transport.start(protocol)
    chunks = [bytes([i]) * (1000 + 37 * i) for i in range(200)]  # about 900 KB
    for chunk in chunks:
        transport.write(chunk)
    assert transport.queued > 0  # some of it waits
    transport.loseConnection()
    got = bytearray()
    for _ in range(100000):  # bounded
        try:
            data = peer.recv(1 << 16)
        except BlockingIOError:
            data = None
        if data == b"":
            break
        if data:
            got += data
        reactor.turn(0.001)
    assert bytes(got) == b"".join(chunks)
    assert protocol.events == ["lost:ConnectionDone"]
    peer.close()
