"""The relay's write function: the lean transport itself, else the transport's own write."""

from __future__ import annotations

import socket

from twisted.internet.testing import MemoryReactor, StringTransport

from tsgate.proxy.relay import write_through
from tsgate.proxy.transport import LeanTransport


def test_a_lean_transport_is_its_own_write_function() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        transport = LeanTransport(a, MemoryReactor())
        write = write_through(transport)
        assert write is transport  # no bound method kept per connection
        write(b"now")
        assert b.recv(10) == b"now"
        assert transport.queue is None  # sent at once, nothing queued
    finally:
        a.close()
        b.close()


def test_other_transports_get_their_own_write() -> None:
    transport = StringTransport()
    assert write_through(transport) == transport.write
