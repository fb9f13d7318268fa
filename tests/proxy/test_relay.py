"""The relay stage's pieces that need no connection: WriteThrough and its fallback."""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.testing import MemoryReactor, StringTransport

from tsgate.proxy.relay import WRITE_BUFFER_FIELDS, WriteThrough, write_through


def test_twisted_tcp_transports_have_the_fields_write_through_reads() -> None:
    """Pins the installed Twisted's write-buffer fields WriteThrough relies on."""
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        server = tcp.Server(a, None, ("127.0.0.1", 1), None, 1, MemoryReactor())  # type: ignore[arg-type]
        for name in WRITE_BUFFER_FIELDS:
            assert hasattr(server, name), name
        assert isinstance(write_through(server), WriteThrough)
        # empty buffer: sent at once, nothing queued in Twisted
        write_through(server)(b"now")
        assert b.recv(10) == b"now"
        assert not server._tempDataBuffer and server.offset == len(server.dataBuffer)
    finally:
        a.close()
        b.close()


def test_queued_data_keeps_its_order() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        server = tcp.Server(a, None, ("127.0.0.1", 1), None, 1, MemoryReactor())  # type: ignore[arg-type]
        write = write_through(server)
        server.write(b"first ")  # queued in Twisted's buffer, not yet flushed
        write(b"second")
        assert server._tempDataBuffer == [b"first ", b"second"]
    finally:
        a.close()
        b.close()


def test_other_transports_get_their_own_write() -> None:
    transport = StringTransport()
    assert write_through(transport) == transport.write
