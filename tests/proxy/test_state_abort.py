"""
``ConnectionState.abort`` of a client whose TLS the gateway terminates: the
TLS layer would wait for the client's close_notify, so the socket under it
is closed too. Each test's docstring names the bug it catches.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tests.support.proxy import Harness
from tsgate.routing import Listener

TCP = Listener(bind="0.0.0.0", port=31400)


class Closing:
    def __init__(self, inner: Any = None) -> None:
        self.closed = 0
        if inner is not None:
            self.transport = inner

    def loseConnection(self) -> None:
        self.closed += 1


def aborted(tls: Any, transport: Closing) -> None:
    h = Harness(TCP)
    protocol, _ = h.accept()
    protocol.tls = tls
    protocol.transport = transport
    protocol.abort()


def test_abort_of_a_terminated_client_closes_the_socket_under_tls() -> None:
    """Catches: the socket under TLS left open (``tls is None``, ``inner is None``)."""
    inner = Closing()
    outer = Closing(inner)
    aborted(SimpleNamespace(), outer)
    assert outer.closed == 1 and inner.closed == 1


def test_abort_of_a_plain_client_closes_only_its_transport() -> None:
    """Catches: the inner close done for a client without TLS (``tls is None``)."""
    inner = Closing()
    outer = Closing(inner)
    aborted(None, outer)
    assert outer.closed == 1 and inner.closed == 0


def test_abort_of_a_terminated_client_without_an_inner_transport() -> None:
    """Catches: ``getattr`` without its default (AttributeError for a layer with no socket)."""
    outer = Closing()
    aborted(SimpleNamespace(), outer)
    assert outer.closed == 1
