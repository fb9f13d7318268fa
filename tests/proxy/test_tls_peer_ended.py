"""
``TlsLayer.peer_ended``: right after the handshake, has the client already
ended its side with nothing sent? A real TLS 1.3 handshake (Python's ssl on
memory BIOs against the layer) over a real loopback TCP connection whose
server end is the layer's socket; the answer only peeks (nothing consumed).
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from tests.support.tlscerts import CA
from tsgate.tls.server import ServerConnectionCreator
from tsgate.tls.transport import lean_wrap

NAME = "a.example.test"


@implementer(IHalfCloseableProtocol)
class Wrapped:
    """The protocol under the layer: what it was told."""

    def __init__(self) -> None:
        self.data = b""
        self.read_lost = False
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:  # noqa: N802
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def readConnectionLost(self) -> None:
        self.read_lost = True

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


class Transport:
    """What the layer needs of its transport."""

    def __init__(self) -> None:
        self.written = b""
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.written += data

    def loseConnection(self) -> None:
        pass


class SocketTransport(Transport):
    """... with the server end of a connection as ``socket``, as the lean transport."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.socket = sock


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    server.setblocking(False)
    listener.close()
    yield client, server
    client.close()
    server.close()


def handshake(server_sock: socket.socket | None) -> tuple[Any, Any, ssl.SSLObject, Any]:
    """A completed handshake; the client's Finished is fed, nothing more."""
    leaf = CA.create().issue(NAME, dns=[NAME])
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate(leaf.cert)
    context.use_privatekey(leaf.key)
    transport = SocketTransport(server_sock) if server_sock is not None else Transport()
    wrapped = Wrapped()
    layer = lean_wrap(transport, ServerConnectionCreator(context), False, wrapped)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(incoming, outgoing, server_hostname=NAME)
    for _ in range(10):  # bounded
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        layer.dataReceived(outgoing.read())
        incoming.write(transport.written)
        transport.written = b""
    return layer, wrapped, client, outgoing


def finish(layer: Any, outgoing: Any, extra: bytes = b"") -> None:
    """The client's Finished (and ``extra`` records) in one read."""
    layer.conn.bio_write(outgoing.read() + extra)
    layer._handshake()


def test_nothing_yet_is_not_ended(pair: Any) -> None:
    layer, _, _, outgoing = handshake(pair[1])
    finish(layer, outgoing)
    assert layer.handshake_done
    assert not layer.peer_ended()


def test_close_notify_with_the_finished_is_ended(pair: Any) -> None:
    layer, _, client, outgoing = handshake(pair[1])
    try:
        client.unwrap()
    except ssl.SSLWantReadError:
        pass
    finish(layer, outgoing)
    assert layer.peer_ended()


def test_data_first_is_not_ended_and_not_consumed(pair: Any) -> None:
    layer, wrapped, client, outgoing = handshake(pair[1])
    client.write(b"hello")
    try:
        client.unwrap()
    except ssl.SSLWantReadError:
        pass
    finish(layer, outgoing)
    assert not layer.peer_ended()
    layer._read()
    assert wrapped.data == b"hello"  # the peek consumed nothing
    assert wrapped.read_lost


def test_fin_on_the_socket_is_ended(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, _, _, outgoing = handshake(server_sock)
    finish(layer, outgoing)
    client_sock.shutdown(socket.SHUT_WR)
    assert layer.peer_ended()
    assert server_sock.recv(10) == b""  # still there for the transport to read


def test_reset_on_the_socket_is_ended(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, _, _, outgoing = handshake(server_sock)
    finish(layer, outgoing)
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client_sock.close()
    assert layer.peer_ended()


def test_part_of_a_record_waiting_is_not_ended(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, _, _, outgoing = handshake(server_sock)
    finish(layer, outgoing)
    client_sock.sendall(b"\x17\x03\x03\x00\x10")  # the next record's header
    client_sock.shutdown(socket.SHUT_WR)
    assert not layer.peer_ended()
    # moved into the BIO (one read): the FIN is what the socket still has
    assert server_sock.recv(10) == b""


def test_close_notify_waiting_on_the_socket_is_ended(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, _, client, outgoing = handshake(server_sock)
    finish(layer, outgoing)
    try:
        client.unwrap()
    except ssl.SSLWantReadError:
        pass
    client_sock.sendall(outgoing.read())  # after the Finished, in a segment of its own
    assert layer.peer_ended()


def test_data_waiting_on_the_socket_is_not_ended_and_delivered(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, wrapped, client, outgoing = handshake(server_sock)
    finish(layer, outgoing)
    client.write(b"hello")
    try:
        client.unwrap()
    except ssl.SSLWantReadError:
        pass
    client_sock.sendall(outgoing.read())
    assert not layer.peer_ended()
    layer._read()  # what the layer does next: the bytes read are decrypted in order
    assert wrapped.data == b"hello"
    assert wrapped.read_lost


def test_a_transport_without_a_socket_is_never_ended() -> None:
    layer, _, _, outgoing = handshake(None)
    finish(layer, outgoing)
    assert not layer.peer_ended()


def test_a_bad_record_is_left_to_the_read(pair: Any) -> None:
    layer, _, _, outgoing = handshake(pair[1])
    finish(layer, outgoing, b"\x17\x03\x03\x00\x05garbage")
    assert not layer.peer_ended()
