"""
``TlsLayer.peer_ended``: right after the handshake, has the client already
ended its side with nothing sent? A real TLS 1.3 handshake (the fixtures of
test_tls_layer.py: Python's ssl on memory BIOs against the layer) over a
real loopback TCP connection whose server end is the layer's socket; what
waits on the socket moves into the BIO, nothing is decrypted or lost.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from tests.proxy.test_tls_layer import HalfWrapped, Peer, Transport, server, up_to_finished
from tsgate.tls.transport import TlsLayer


class SocketTransport(Transport):
    """... with the server end of a connection as ``socket``, as the lean transport."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.socket = sock


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    accepted.setblocking(False)
    listener.close()
    yield client, accepted
    client.close()
    accepted.close()


def handshake(sock: Optional[socket.socket]) -> tuple[TlsLayer, HalfWrapped, Peer]:
    """A handshake up to the client's Finished (held in ``peer.outgoing``)."""
    wrapped = HalfWrapped()
    layer, transport = server(wrapped, SocketTransport(sock) if sock is not None else None)
    peer = Peer()
    up_to_finished(layer, transport, peer)
    return layer, wrapped, peer


def finish(layer: TlsLayer, peer: Peer, extra: bytes = b"") -> None:
    """The client's Finished (and what ``peer`` queued after it, and ``extra``) in one read."""
    layer.conn.bio_write(peer.out() + extra)
    layer._handshake()


def test_nothing_yet_is_not_ended(pair: Any) -> None:
    layer, _, peer = handshake(pair[1])
    finish(layer, peer)
    assert layer.handshake_done
    assert not layer.peer_ended()


def test_close_notify_with_the_finished_is_ended(pair: Any) -> None:
    layer, _, peer = handshake(pair[1])
    layer.conn.bio_write(peer.close())  # the Finished, then close_notify
    layer._handshake()
    assert layer.peer_ended()


def test_data_first_is_not_ended_and_not_consumed(pair: Any) -> None:
    layer, wrapped, peer = handshake(pair[1])
    peer.tls.write(b"hello")
    layer.conn.bio_write(peer.close())
    layer._handshake()
    assert not layer.peer_ended()
    layer._read()
    assert wrapped.data == b"hello"  # the peek consumed nothing
    assert "read_lost" in wrapped.names()


def test_fin_on_the_socket_is_ended(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, _, peer = handshake(server_sock)
    finish(layer, peer)
    client_sock.shutdown(socket.SHUT_WR)
    assert layer.peer_ended()
    assert server_sock.recv(10) == b""  # still there for the transport to read


def test_reset_on_the_socket_is_ended(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, _, peer = handshake(server_sock)
    finish(layer, peer)
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client_sock.close()
    assert layer.peer_ended()


def test_part_of_a_record_waiting_is_not_ended(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, _, peer = handshake(server_sock)
    finish(layer, peer)
    client_sock.sendall(b"\x17\x03\x03\x00\x10")  # the next record's header
    client_sock.shutdown(socket.SHUT_WR)
    assert not layer.peer_ended()
    # moved into the BIO (one read): the FIN is what the socket still has
    assert server_sock.recv(10) == b""


def test_close_notify_waiting_on_the_socket_is_ended(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, _, peer = handshake(server_sock)
    finish(layer, peer)
    client_sock.sendall(peer.close())  # after the Finished, in a segment of its own
    assert layer.peer_ended()


def test_data_waiting_on_the_socket_is_not_ended_and_delivered(pair: Any) -> None:
    client_sock, server_sock = pair
    layer, wrapped, peer = handshake(server_sock)
    finish(layer, peer)
    peer.tls.write(b"hello")
    client_sock.sendall(peer.close())
    assert not layer.peer_ended()
    layer._read()  # what the layer does next: the bytes read are decrypted in order
    assert wrapped.data == b"hello"
    assert "read_lost" in wrapped.names()


def test_a_transport_without_a_socket_is_never_ended() -> None:
    layer, _, peer = handshake(None)
    finish(layer, peer)
    assert not layer.peer_ended()


def test_a_bad_record_is_left_to_the_read(pair: Any) -> None:
    layer, _, peer = handshake(pair[1])
    finish(layer, peer, b"\x17\x03\x03\x00\x05garbage")
    assert not layer.peer_ended()
