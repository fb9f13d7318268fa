"""
The lean connector's ways to fail (tsgate.proxy.dial), with a recording
reactor and unconnected sockets: what ``clientConnectionFailed`` gets (the
``UF``/``DF`` details come from it), reported once. Each test states the
planted bug (a mutant of docs/mutation-report.md, "data path") it catches.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, error
from twisted.python.failure import Failure

from tsgate.proxy.dial import LeanConnector, ResolvingConnector, lean_connect
from tsgate.routing import Endpoint


class Reactor:
    """Records writers and resolutions; nothing runs by itself."""

    def __init__(self) -> None:
        self.writers: list[Any] = []
        self.removed: list[Any] = []
        self.resolving: list[tuple[str, defer.Deferred[str]]] = []

    def addWriter(self, w: Any) -> None:
        self.writers.append(w)

    def removeWriter(self, w: Any) -> None:
        self.removed.append(w)

    def resolve(self, name: str) -> defer.Deferred[str]:
        d: defer.Deferred[str] = defer.Deferred()
        self.resolving.append((name, d))
        return d


class Factory:
    def __init__(self) -> None:
        self.failed: list[tuple[Any, Failure]] = []

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.failed.append((connector, reason))


def test_the_reactor_dropping_the_socket_is_a_connect_error_once() -> None:
    """
    The reactor drops a connecting socket without an error on it: a
    ConnectError with the reactor's reason, the writer removed, the socket
    closed, reported once (planted: any of these lost).
    """
    reactor, factory = Reactor(), Factory()
    sock = socket.socket()
    connector = LeanConnector(reactor, sock, factory)
    assert connector.logPrefix() == "tsgate-connect"
    connector.connectionLost(Failure(error.ConnectionLost("reactor shut down")))
    connector.connectionLost(Failure(error.ConnectionLost("again")))
    connector.stopConnecting()
    assert reactor.removed == [connector]
    (who, reason), = factory.failed
    assert who is connector and reason.check(error.ConnectError)
    assert "reactor shut down" in reason.getErrorMessage()
    assert sock.fileno() == -1  # closed
    connector.doWrite()  # a late writable event: nothing
    assert len(factory.failed) == 1


def test_stop_connecting_is_a_user_error_once() -> None:
    reactor, factory = Reactor(), Factory()
    connector = LeanConnector(reactor, socket.socket(), factory)
    connector.stopConnecting()
    connector.stopConnecting()
    connector.connectionLost(Failure(error.ConnectionLost()))
    assert reactor.removed == [connector]
    (who, reason), = factory.failed
    assert reason.check(error.UserError)
    assert "stopConnecting was called" in reason.getErrorMessage()


def test_a_name_that_does_not_resolve_fails_once_with_the_lookup_error() -> None:
    """DNSLookupError as the resolver gave it (the access log says DF); a later stop is quiet."""
    reactor, factory = Reactor(), Factory()
    connector = lean_connect(reactor, None, Endpoint("nowhere.test", 80), factory)
    assert isinstance(connector, ResolvingConnector)
    (name, d), = reactor.resolving
    assert name == "nowhere.test"
    d.errback(error.DNSLookupError("nowhere.test"))
    connector.stopConnecting()
    (who, reason), = factory.failed
    assert who is connector and reason.check(error.DNSLookupError)
    assert reactor.writers == []


def test_stopped_before_the_answer_never_connects() -> None:
    reactor, factory = Reactor(), Factory()
    connector = lean_connect(reactor, None, Endpoint("backend.test", 80), factory)
    connector.stopConnecting()
    connector.stopConnecting()
    (_, d), = reactor.resolving
    d.callback("127.0.0.1")
    (who, reason), = factory.failed
    assert reason.check(error.UserError)
    assert reactor.writers == []


def test_stopped_after_the_answer_stops_the_connect() -> None:
    """A stop once the address is known stops the socket's connect (one report)."""
    reactor, factory = Reactor(), Factory()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        port = server.getsockname()[1]
        connector = lean_connect(reactor, None, Endpoint("backend.test", port), factory)
        (_, d), = reactor.resolving
        d.callback("127.0.0.1")
        inner, = reactor.writers
        assert isinstance(inner, LeanConnector)
        connector.stopConnecting()
        assert reactor.removed == [inner]
        (who, reason), = factory.failed
        assert who is inner and reason.check(error.UserError)
    finally:
        server.close()
