"""
``tsgate.tls.transport``: the data path's own TLS layer (``TlsLayer``,
``lean_wrap``) method by method. Real TLS 1.3 handshakes on memory BIOs
(Python's ssl, or pyOpenSSL, as the peer) against the layer over a fake
transport that records what the layer asked of it, under a protocol that
records what the layer told it. Each test names the mutant(s) of
``tests/mutation/run tls.transport`` it catches.
"""

from __future__ import annotations

import ssl
from typing import Any, Callable, Optional

import pytest
from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.support.tlscerts import CA
from tsgate.tls.server import ServerConnectionCreator
from tsgate.tls.transport import FLUSH_SIZE, TlsLayer, lean_wrap

NAME = "a.example.test"
LEAF = CA.create().issue(NAME, dns=[NAME])
#: more than three of the layer's outgoing-BIO reads (FLUSH_SIZE), many records
BIG = 3 * FLUSH_SIZE + 12_345


def server_context(min_version: Optional[int] = None) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate(LEAF.cert)
    context.use_privatekey(LEAF.key)
    if min_version is not None:
        context.set_min_proto_version(min_version)
    return context


class ClientCreator:
    """A client ``IOpenSSLClientConnectionCreator``: which layer asked."""

    def __init__(self) -> None:
        self.context = SSL.Context(SSL.TLS_METHOD)
        self.asked: list[Any] = []

    def clientConnectionForTLS(self, layer: Any) -> SSL.Connection:  # noqa: N802
        self.asked.append(layer)
        conn = SSL.Connection(self.context, None)
        conn.set_tlsext_host_name(NAME.encode())
        return conn


# -- the transport under the layer and the protocol over it -----------------


class Transport:
    """What the layer asks of its socket transport, in order."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.calls: list[tuple[Any, ...]] = []
        self.protocol: Any = None
        self.on_abort: Optional[Callable[[], None]] = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def take(self) -> bytes:
        data = b"".join(self.written)
        self.written = []
        return data

    def loseConnection(self) -> None:
        self.calls.append(("loseConnection",))

    def loseWriteConnection(self) -> None:
        self.calls.append(("loseWriteConnection",))

    def abortConnection(self) -> None:
        self.calls.append(("abortConnection",))
        if self.on_abort is not None:
            self.on_abort()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.calls.append(("registerProducer", producer, streaming))

    def unregisterProducer(self) -> None:
        self.calls.append(("unregisterProducer",))

    def pauseProducing(self) -> None:
        self.calls.append(("pauseProducing",))

    def resumeProducing(self) -> None:
        self.calls.append(("resumeProducing",))

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.calls.append(("setTcpNoDelay", enabled))

    def getPeer(self) -> Any:
        return ("peer", 1)

    def getHost(self) -> Any:
        return ("host", 2)


class LeanTransport(Transport):
    """... with the lean transport's ``half_close`` flag."""

    def __init__(self) -> None:
        super().__init__()
        self.half_close = False


class Wrapped:
    """A protocol that is neither half-closeable nor a handshake listener."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.transport: Any = None
        self.on_data: Optional[Callable[[bytes], None]] = None

    @property
    def data(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "data")

    def names(self) -> list[str]:
        return [e[0] for e in self.events]

    def dataReceived(self, data: bytes) -> None:
        self.events.append(("data", data))
        if self.on_data is not None:
            self.on_data(data)

    def connectionLost(self, reason: Any) -> None:
        self.events.append(("lost", reason))

    def reason(self) -> Any:
        [reason] = [e[1] for e in self.events if e[0] == "lost"]
        return reason


@implementer(IHalfCloseableProtocol)
class HalfWrapped(Wrapped):
    """A half-closeable protocol (the relay's)."""

    def readConnectionLost(self) -> None:
        self.events.append(("read_lost",))

    def writeConnectionLost(self) -> None:
        self.events.append(("write_lost",))


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class Listening(HalfWrapped):
    """... told when the handshake completed (``on_handshake`` runs then)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_handshake: Optional[Callable[[], None]] = None

    def handshakeCompleted(self) -> None:  # noqa: N802
        self.events.append(("handshake",))
        if self.on_handshake is not None:
            self.on_handshake()


# -- the peer ------------------------------------------------------------------


class Peer:
    """A TLS 1.3 client (Python's ssl) on memory BIOs."""

    def __init__(self, maximum: Optional[ssl.TLSVersion] = None) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if maximum is not None:
            context.maximum_version = maximum
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=NAME)

    def step(self) -> bool:
        try:
            self.tls.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def out(self) -> bytes:
        return self.outgoing.read()

    def read(self, transport: Transport) -> tuple[bytes, bool]:
        """What the layer sent, decrypted; and whether its close_notify ended it."""
        self.incoming.write(transport.take())
        data = b""
        try:
            while True:
                chunk = self.tls.read(65536)
                if not chunk:
                    return data, True
                data += chunk
        except ssl.SSLWantReadError:
            return data, False
        except ssl.SSLZeroReturnError:
            return data, True

    def close(self) -> bytes:
        """Our close_notify."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        return self.out()


def server(wrapped: Wrapped, transport: Optional[Transport] = None,
           context: Optional[SSL.Context] = None) -> tuple[TlsLayer, Transport]:
    transport = transport if transport is not None else Transport()
    layer = lean_wrap(transport, ServerConnectionCreator(context or server_context()), False,
                      wrapped)
    return layer, transport


def up_to_finished(layer: TlsLayer, transport: Transport, peer: Peer) -> None:
    """The handshake, but for the client's Finished (left in ``peer.outgoing``)."""
    for _ in range(10):  # bounded
        peer.incoming.write(transport.take())
        if peer.step():
            return
        layer.dataReceived(peer.out())
    raise AssertionError("the handshake did not complete")


def connected(wrapped: Optional[Wrapped] = None,
              transport: Optional[Transport] = None) -> tuple[TlsLayer, Transport, Peer, Any]:
    """A server-side layer whose handshake with a ``Peer`` is complete."""
    wrapped = wrapped if wrapped is not None else HalfWrapped()
    layer, transport = server(wrapped, transport)
    peer = Peer()
    up_to_finished(layer, transport, peer)
    layer.dataReceived(peer.out())
    assert layer.handshake_done
    assert peer.read(transport) == (b"", False)  # the session tickets
    return layer, transport, peer, wrapped


def send(layer: TlsLayer, peer: Peer, *chunks: bytes) -> None:
    """``chunks`` as records of their own, all in one read."""
    for chunk in chunks:
        peer.tls.write(chunk)
    layer.dataReceived(peer.out())


def alert(peer: Peer, transport: Transport) -> str:
    """The alert the layer sent, as the peer's ssl reports it."""
    with pytest.raises(ssl.SSLError) as info:
        peer.incoming.write(transport.take())
        peer.tls.do_handshake() if not peer.tls.version() else peer.tls.read(10)
    return str(info.value)


# -- construction ----------------------------------------------------------------


def test_a_new_layer_is_connected_open_and_waiting() -> None:
    """__init__ mutants 1-17: each flag's exact initial value (Twisted reads ``connected``)."""
    wrapped = Wrapped()
    layer = TlsLayer(wrapped)
    assert layer.transport is None
    assert layer.wrappedProtocol is wrapped
    assert layer.conn is None
    assert layer.handshake_done is False
    assert layer.connected == 1
    assert layer.disconnecting is False
    assert layer.lost is False
    assert layer.write_closed is False
    assert layer.read_closed is False
    assert layer.reason is None
    assert layer.pending is None
    assert layer.half_closeable is False and layer.listener is False
    listening = TlsLayer(Listening())
    assert listening.half_closeable is True and listening.listener is True


def test_lean_wrap_server_side_waits_for_the_client_hello() -> None:
    """lean_wrap: the layer between transport and protocol, accept state, nothing sent."""
    wrapped = Wrapped()
    transport = LeanTransport()
    layer = lean_wrap(transport, ServerConnectionCreator(server_context()), False, wrapped)
    assert transport.protocol is layer
    assert layer.transport is transport
    assert wrapped.transport is layer
    assert layer.getHandle() is layer.conn
    assert layer.conn.get_app_data() is layer  # the creator was asked for this layer
    assert transport.half_close is True  # FINs come to readConnectionLost
    assert transport.written == []


def test_lean_wrap_leaves_a_transport_without_half_close_alone() -> None:
    """lean_wrap mutant ``not hasattr``/``hasattr(…, None)``: no attribute added to Twisted's."""
    transport = Transport()
    lean_wrap(transport, ServerConnectionCreator(server_context()), False, Wrapped())
    assert not hasattr(transport, "half_close")


def test_lean_wrap_client_side_sends_the_client_hello_and_completes() -> None:
    """lean_wrap(client=True): clientConnectionForTLS(layer), connect state, ClientHello at once."""
    creator = ClientCreator()
    transport = LeanTransport()
    wrapped = Listening()
    layer = lean_wrap(transport, creator, True, wrapped)
    assert creator.asked == [layer]
    assert transport.half_close is True
    hello = b"".join(transport.written)
    assert len(transport.written) == 1
    assert hello[:1] == b"\x16" and hello[5:6] == b"\x01"  # a handshake record: ClientHello
    peer = SSL.Connection(server_context(), None)
    peer.set_accept_state()
    for _ in range(10):  # bounded
        peer.bio_write(transport.take())
        try:
            peer.do_handshake()
            break
        except SSL.WantReadError:
            layer.dataReceived(peer.bio_read(65536))
    assert layer.handshake_done
    assert wrapped.names() == ["handshake"]
    layer.write(b"request")
    peer.bio_write(transport.take())
    assert peer.recv(100) == b"request"
    peer.send(b"response")
    layer.dataReceived(peer.bio_read(65536))
    assert wrapped.data == b"response"


# -- the handshake ---------------------------------------------------------------


def test_handshake_tells_the_listener_once_and_sends_what_was_written_before() -> None:
    """write mutants 6-8 and _handshake: pending writes kept in order, sent once after."""
    wrapped = Listening()
    layer, transport = server(wrapped)
    layer.write(b"one ")
    layer.write(b"")
    layer.write(b"two")
    assert layer.pending == [b"one ", b"two"]
    peer = Peer()
    up_to_finished(layer, transport, peer)
    assert layer.pending == [b"one ", b"two"]
    layer.dataReceived(peer.out())
    assert layer.pending is None
    assert wrapped.names() == ["handshake"]
    assert peer.read(transport) == (b"one two", False)
    layer.write(b" three")
    assert peer.read(transport) == (b" three", False)


def test_nothing_empty_is_queued_before_the_handshake() -> None:
    """write mutant 1 (``... or self.lost and not data``): b"" is not a pending write."""
    layer, _ = server(Wrapped())
    layer.write(b"")
    assert layer.pending is None


def test_the_finished_and_data_in_one_read() -> None:
    """dataReceived: the records after the client's Finished are read in the same call."""
    wrapped = Listening()
    layer, transport = server(wrapped)
    peer = Peer()
    up_to_finished(layer, transport, peer)
    peer.tls.write(b"early")
    layer.dataReceived(peer.out())
    assert wrapped.names() == ["handshake", "data"]
    assert wrapped.data == b"early"


def test_data_with_the_finished_is_not_read_once_the_listener_closed() -> None:
    """dataReceived mutant 5 (``not done and disconnecting``): closed in handshakeCompleted."""
    wrapped = Listening()
    layer, transport = server(wrapped)
    wrapped.on_handshake = layer.loseConnection
    peer = Peer()
    up_to_finished(layer, transport, peer)
    peer.tls.write(b"early")
    layer.dataReceived(peer.out())
    assert wrapped.names() == ["handshake"]
    assert transport.calls == [("loseConnection",)]
    assert peer.read(transport) == (b"", True)  # our close_notify


def test_a_failed_handshake_sends_the_alert_and_closes_once() -> None:
    """_handshake/_fail: the alert, the reason kept, disconnecting/write_closed, one close."""
    wrapped = Listening()
    layer, transport = server(wrapped, context=server_context(SSL.TLS1_3_VERSION))
    peer = Peer(maximum=ssl.TLSVersion.TLSv1_2)
    peer.step()
    layer.dataReceived(peer.out())
    assert not layer.handshake_done
    assert layer.disconnecting is True and layer.write_closed is True
    assert transport.calls == [("loseConnection",)]
    assert isinstance(layer.reason, Failure) and layer.reason.check(SSL.Error)
    assert "unsupported protocol" in str(layer.reason.value)
    assert "alert protocol version" in alert(peer, transport)
    first = layer.reason
    layer.dataReceived(b"\x16\x03\x01\x00\x05hello")  # more bytes, then the FIN
    layer.readConnectionLost()
    assert layer.reason is first  # the first failure is the reason
    layer.connectionLost(Failure(ConnectionDone()))
    assert wrapped.events == [("lost", first)]  # why the handshake failed, not a clean close
    assert layer.lost is True and layer.connected == 0


def test_a_fin_during_the_handshake_fails_it_in_openssl_words() -> None:
    """readConnectionLost mutant 1 and _fail(None): OpenSSL's reason for the EOF."""
    wrapped = Wrapped()
    layer, transport = server(wrapped)
    peer = Peer()
    peer.step()
    layer.dataReceived(peer.out())
    transport.take()
    layer.readConnectionLost()
    assert transport.calls == [("loseConnection",)]
    assert layer.disconnecting is True and layer.write_closed is True
    assert layer.reason is not None and layer.reason.check(SSL.Error)
    layer.connectionLost(Failure(ConnectionDone()))
    assert wrapped.reason() is layer.reason


class SilentConn:
    """A pyOpenSSL connection that never has anything to say (nor an error)."""

    def __init__(self, bio_error: bool = False) -> None:
        self.bio_error = bio_error
        self.calls: list[str] = []

    def bio_write(self, data: bytes) -> int:
        self.calls.append("bio_write")
        if self.bio_error:
            raise SSL.Error("no BIO")
        return len(data)

    def bio_read(self, size: int) -> bytes:
        raise SSL.WantReadError()

    def bio_shutdown(self) -> None:
        self.calls.append("bio_shutdown")

    def do_handshake(self) -> None:
        self.calls.append("do_handshake")
        raise SSL.WantReadError()


def test_a_fin_during_the_handshake_without_openssl_words() -> None:
    """_fail mutants on the ConnectionError: its message when OpenSSL says nothing."""
    wrapped = Wrapped()
    layer, transport = server(wrapped)
    conn = layer.conn = SilentConn()
    layer.readConnectionLost()
    assert conn.calls == ["bio_shutdown", "do_handshake"]
    assert layer.reason is not None and layer.reason.check(ConnectionError)
    assert str(layer.reason.value) == "connection closed during handshake"
    assert transport.calls == [("loseConnection",)]


def test_a_bio_error_fails_with_it_and_goes_no_further() -> None:
    """dataReceived mutant 3 (``_fail(None)``) and the ``return`` after it."""
    wrapped = Wrapped()
    layer, transport = server(wrapped)
    conn = layer.conn = SilentConn(bio_error=True)
    layer.dataReceived(b"x")
    assert conn.calls == ["bio_write"]  # no handshake attempted
    assert layer.reason is not None and str(layer.reason.value) == "no BIO"
    assert transport.calls == [("loseConnection",)]


def test_connection_lost_during_the_handshake_in_openssl_words() -> None:
    """connectionLost mutants 7-10: before the handshake, OpenSSL's reason replaces the close."""
    wrapped = Wrapped()
    layer, transport = server(wrapped)
    peer = Peer()
    peer.step()
    layer.dataReceived(peer.out())
    layer.connectionLost(Failure(ConnectionLost()))
    reason = wrapped.reason()
    assert isinstance(reason, Failure) and reason.check(SSL.Error)
    assert transport.calls == []


def test_connection_lost_with_the_handshake_completable_keeps_the_reason() -> None:
    """_handshake_error: nothing to say when the handshake could complete; the reason as given."""
    wrapped = Wrapped()
    layer, transport = server(wrapped)
    peer = Peer()
    up_to_finished(layer, transport, peer)
    layer.conn.bio_write(peer.out())  # the Finished is there, not yet read
    given = Failure(ConnectionDone())
    layer.connectionLost(given)
    assert wrapped.reason() is given


def test_connection_lost_when_openssl_has_nothing_to_say() -> None:
    """_handshake_error's WantReadError: the reason as given."""
    wrapped = Wrapped()
    layer, _ = server(wrapped)
    layer.conn = SilentConn()
    given = Failure(ConnectionDone())
    layer.connectionLost(given)
    assert wrapped.reason() is given


def test_connection_lost_after_the_handshake_once_with_the_reason() -> None:
    """connectionLost mutants 1-6: the reason as given, once; lost and no longer connected."""
    layer, transport, _, wrapped = connected()
    given = Failure(ConnectionDone())
    layer.connectionLost(given)
    assert layer.lost is True
    assert layer.connected == 0
    layer.connectionLost(Failure(ConnectionLost()))
    assert wrapped.events == [("lost", given)]
    layer.write(b"late")
    layer.dataReceived(b"\x17\x03\x03\x00\x05bogus")  # a late read fails nothing to the socket
    assert transport.written == []


# -- reading -----------------------------------------------------------------------


def test_records_of_one_read_are_one_data_received() -> None:
    """_read mutants 15-18: every record decrypted, in order, in one dataReceived (two, three)."""
    layer, _, peer, wrapped = connected()
    send(layer, peer, b"one")
    assert wrapped.events == [("data", b"one")]
    send(layer, peer, b"a", b"bb")
    send(layer, peer, b"a", b"bb", b"ccc")
    assert wrapped.events == [("data", b"one"), ("data", b"abb"), ("data", b"abbccc")]
    big = bytes(range(256)) * 200  # several full records
    send(layer, peer, big)
    assert wrapped.events[-1] == ("data", big)


def test_a_bad_record_fails_with_the_alert() -> None:
    """_read's SSL.Error: the reason kept, the alert sent, closed, nothing delivered."""
    layer, transport, peer, wrapped = connected()
    layer.dataReceived(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    assert wrapped.events == []
    assert layer.reason is not None and layer.reason.check(SSL.Error)
    assert "bad record mac" in str(layer.reason.value)  # _read mutant 10: OpenSSL's error
    assert transport.calls == [("loseConnection",)]
    assert "bad record mac" in alert(peer, transport)
    layer.connectionLost(Failure(ConnectionDone()))
    assert wrapped.events == [("lost", layer.reason)]


def test_close_notify_is_read_connection_lost_for_a_half_closeable_protocol() -> None:
    """_read/_peer_closed: the data, then readConnectionLost once; writing goes on."""
    layer, transport, peer, wrapped = connected()
    peer.tls.write(b"last")
    layer.dataReceived(peer.close())
    assert wrapped.names() == ["data", "read_lost"]
    assert wrapped.data == b"last"
    assert layer.read_closed is True
    assert transport.calls == []
    layer.dataReceived(b"\x17\x03\x03\x00\x05after")  # after close_notify: not read
    layer.readConnectionLost()  # the FIN that follows
    assert wrapped.names() == ["data", "read_lost"]
    assert layer.reason is None
    layer.write(b"answer")
    assert peer.read(transport) == (b"answer", False)


def test_close_notify_closes_for_a_plain_protocol() -> None:
    """_peer_closed: not half-closeable, so our close_notify and the close."""
    layer, transport, peer, wrapped = connected(Wrapped())
    layer.dataReceived(peer.close())
    assert wrapped.events == []
    assert layer.read_closed is True
    assert transport.calls == [("loseConnection",)]
    assert peer.read(transport) == (b"", True)


def test_a_fin_after_the_handshake_is_the_end_of_data() -> None:
    """readConnectionLost mutant 2: a FIN without close_notify, readConnectionLost once."""
    layer, transport, _, wrapped = connected()
    layer.readConnectionLost()
    assert wrapped.names() == ["read_lost"]
    assert layer.read_closed is True
    layer.readConnectionLost()
    assert wrapped.names() == ["read_lost"]
    assert transport.calls == []


def test_a_fin_after_the_handshake_closes_a_plain_protocol() -> None:
    """readConnectionLost/_peer_closed: close_notify then the close."""
    layer, transport, peer, wrapped = connected(Wrapped())
    layer.readConnectionLost()
    assert transport.calls == [("loseConnection",)]
    assert peer.read(transport) == (b"", True)
    assert wrapped.events == []


def test_nothing_after_the_protocol_lost_the_connection_in_data_received() -> None:
    """_read's ``if self.lost: return``: no readConnectionLost after connectionLost."""
    transport = Transport()
    layer, transport, peer, wrapped = connected(transport=transport)
    transport.on_abort = lambda: layer.connectionLost(Failure(ConnectionLost()))
    wrapped.on_data = lambda data: layer.abortConnection()
    peer.tls.write(b"bye")
    layer.dataReceived(peer.close())
    assert wrapped.names() == ["data", "lost"]
    assert transport.written == []


# -- writing -------------------------------------------------------------------


def test_a_big_write_goes_out_whole_in_one_transport_write() -> None:
    """write's partial-write loop (one record per send) and _flush's chunks of FLUSH_SIZE."""
    layer, transport, peer, _ = connected()
    data = bytes(range(256)) * (BIG // 256)
    layer.write(data)
    assert len(transport.written) == 1
    assert len(transport.written[0]) > 3 * FLUSH_SIZE
    assert peer.read(transport) == (data, False)


def test_exactly_one_flush_size() -> None:
    """_flush mutants 4-14: an outgoing BIO of exactly FLUSH_SIZE, then of twice that."""
    layer, transport, peer, _ = connected()
    for multiple in (1, 2):
        size = 0
        data = b""
        # records of 16384 bytes are 16384 + 22 on the wire (TLS 1.3, AES-GCM)
        while size + 16384 + 22 <= multiple * FLUSH_SIZE:
            data += b"x" * 16384
            size += 16384 + 22
        rest = multiple * FLUSH_SIZE - size - 22
        data += b"y" * rest
        layer.write(data)
        assert [len(w) for w in transport.written] == [multiple * FLUSH_SIZE]
        assert peer.read(transport) == (data, False)


def test_write_sequence_is_one_write() -> None:
    """writeSequence mutants 1-3: the parts joined, nothing between them."""
    layer, transport, peer, _ = connected()
    layer.writeSequence([b"a", b"bc", b"d"])
    assert len(transport.written) == 1
    assert peer.read(transport) == (b"abcd", False)


def test_an_empty_write_sends_nothing() -> None:
    """write's ``not data`` guard after the handshake: b"" is no record."""
    layer, transport, _, _ = connected()
    layer.write(b"")
    assert transport.written == []


def test_a_failed_send_fails_the_connection_with_its_error() -> None:
    """write mutant 19 (``_fail(None)``): OpenSSL's error on send is the reason."""
    layer, transport, _, wrapped = connected()
    layer.conn.shutdown()  # behind the layer's back: SSL_write now fails
    transport.take()
    layer.write(b"data")
    assert layer.reason is not None and layer.reason.check(SSL.Error)
    assert "shutdown" in str(layer.reason.value)
    assert transport.calls == [("loseConnection",)]
    assert layer.disconnecting is True and layer.write_closed is True


# -- closing ---------------------------------------------------------------------


def test_lose_connection_sends_close_notify_once_then_closes() -> None:
    """loseConnection mutants 1-7: close_notify after the data, one close, flags."""
    layer, transport, peer, wrapped = connected()
    layer.write(b"last")
    layer.loseConnection()
    assert layer.disconnecting is True and layer.write_closed is True
    assert transport.calls == [("loseConnection",)]
    assert peer.read(transport) == (b"last", True)
    layer.loseConnection()
    layer.write(b"more")
    layer.half_close()
    assert transport.calls == [("loseConnection",)]
    assert transport.written == []


def test_lose_connection_after_half_close_sends_no_second_close_notify() -> None:
    """loseConnection mutant 5 (``and self.write_closed``)."""
    layer, transport, peer, _ = connected()
    layer.half_close()
    assert peer.read(transport) == (b"", True)
    layer.loseConnection()
    assert transport.calls == [("loseWriteConnection",), ("loseConnection",)]
    assert transport.written == []


def test_lose_connection_before_the_handshake_sends_nothing() -> None:
    """loseConnection mutant 4 (``or not write_closed``): no shutdown before the handshake."""
    layer, transport = server(Wrapped())
    layer.loseConnection()
    assert layer.disconnecting is True
    assert layer.write_closed is False
    assert transport.calls == [("loseConnection",)]
    assert transport.written == []


def test_lose_connection_after_connection_lost_does_nothing() -> None:
    """loseConnection mutant 1 (``disconnecting and lost``)."""
    layer, transport, _, _ = connected()
    layer.connectionLost(Failure(ConnectionDone()))
    layer.loseConnection()
    layer.half_close()
    layer.release()
    assert transport.calls == []
    assert transport.written == []


def test_abort_connection_is_the_transport_s_and_stops_writes() -> None:
    """
    abortConnection mutants 1-2: disconnecting, so nothing written after;
    half_close mutant 1 (``disconnecting and lost``) and release mutant 1:
    no close_notify, FIN nor close after an abort.
    """
    layer, transport, _, _ = connected()
    layer.abortConnection()
    assert layer.disconnecting is True
    assert transport.calls == [("abortConnection",)]
    layer.write(b"x")
    layer.half_close()
    layer.loseConnection()
    layer.release()
    assert transport.written == []
    assert transport.calls == [("abortConnection",)]


def test_half_close_sends_close_notify_then_the_fin_and_keeps_reading() -> None:
    """half_close mutants 2, 5, 6: write_closed, close_notify after the data, FIN; reads go on."""
    layer, transport, peer, wrapped = connected()
    layer.write(b"last")
    layer.half_close()
    assert layer.write_closed is True and layer.disconnecting is False
    assert transport.calls == [("loseWriteConnection",)]
    assert peer.read(transport) == (b"last", True)
    layer.write(b"more")
    layer.half_close()
    layer.loseWriteConnection()
    assert transport.written == []
    assert transport.calls == [("loseWriteConnection",)]
    send(layer, peer, b"still reading")
    assert wrapped.data == b"still reading"
    layer.writeConnectionLost()
    assert wrapped.names() == ["data", "write_lost"]


def test_lose_write_connection_is_half_close() -> None:
    """loseWriteConnection is half_close (Twisted's name)."""
    layer, transport, peer, _ = connected()
    layer.loseWriteConnection()
    assert transport.calls == [("loseWriteConnection",)]
    assert peer.read(transport) == (b"", True)


def test_write_connection_lost_is_not_told_to_a_plain_protocol() -> None:
    """writeConnectionLost: only a half-closeable protocol has the method."""
    layer, _, _, wrapped = connected(Wrapped())
    layer.writeConnectionLost()
    assert wrapped.events == []


def test_half_close_before_the_handshake_closes() -> None:
    """half_close mutant 3 (``not done and pending``): before the handshake, loseConnection."""
    layer, transport = server(HalfWrapped())
    layer.half_close()
    assert transport.calls == [("loseConnection",)]
    assert layer.disconnecting is True and layer.write_closed is False
    assert transport.written == []


def test_half_close_with_writes_still_pending_closes() -> None:
    """half_close's ``or self.pending``: called from handshakeCompleted with writes queued."""
    wrapped = Listening()
    layer, transport = server(wrapped)
    wrapped.on_handshake = layer.half_close
    layer.write(b"queued")
    peer = Peer()
    up_to_finished(layer, transport, peer)
    layer.dataReceived(peer.out())
    assert transport.calls == [("loseConnection",)]
    assert layer.disconnecting is True


def test_release_unregisters_then_closes_once() -> None:
    """release mutants: unregisterProducer then loseConnection; not when already closing."""
    layer, transport, peer, _ = connected()
    layer.release()
    assert transport.calls == [("unregisterProducer",), ("loseConnection",)]
    assert peer.read(transport) == (b"", True)
    layer.release()
    assert transport.calls == [("unregisterProducer",), ("loseConnection",)]


def test_stop_producing_closes() -> None:
    """stopProducing is loseConnection."""
    layer, transport, peer, _ = connected()
    layer.stopProducing()
    assert transport.calls == [("loseConnection",)]
    assert peer.read(transport) == (b"", True)


# -- the transport's other methods -----------------------------------------------


def test_the_transport_s_methods_pass_through() -> None:
    """getPeer/getHost/setTcpNoDelay/producer mutants: each argument as given."""
    layer, transport, _, _ = connected()
    producer = object()
    assert layer.getPeer() == ("peer", 1)
    assert layer.getHost() == ("host", 2)
    layer.setTcpNoDelay(True)
    layer.setTcpNoDelay(False)
    layer.registerProducer(producer, True)
    layer.registerProducer(producer, False)
    layer.pauseProducing()
    layer.resumeProducing()
    layer.unregisterProducer()
    assert transport.calls == [
        ("setTcpNoDelay", True), ("setTcpNoDelay", False),
        ("registerProducer", producer, True), ("registerProducer", producer, False),
        ("pauseProducing",), ("resumeProducing",), ("unregisterProducer",)]
