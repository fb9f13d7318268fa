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
    """Watched descriptors and pending resolutions; nothing runs by itself."""

    def __init__(self) -> None:
        self.readers: set[Any] = set()
        self.writers: set[Any] = set()
        self.resolving: list[tuple[str, defer.Deferred[str]]] = []

    def addReader(self, r: Any) -> None:
        self.readers.add(r)

    def removeReader(self, r: Any) -> None:
        self.readers.discard(r)

    def addWriter(self, w: Any) -> None:
        self.writers.add(w)

    def removeWriter(self, w: Any) -> None:
        self.writers.discard(w)

    def resolve(self, name: str) -> defer.Deferred[str]:
        d: defer.Deferred[str] = defer.Deferred()
        self.resolving.append((name, d))
        return d


def connecting(reactor: Reactor, factory: Any) -> tuple[LeanConnector, socket.socket]:
    """A connector whose socket is being watched for the connect's end."""
    sock = socket.socket()
    connector = LeanConnector(reactor, sock, factory)
    reactor.addWriter(connector)
    return connector, sock


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
    connector, sock = connecting(reactor, factory)
    assert connector.logPrefix() == "tsgate-connect"
    connector.connectionLost(Failure(error.ConnectionLost("reactor shut down")))
    connector.connectionLost(Failure(error.ConnectionLost("again")))
    connector.stopConnecting()
    assert reactor.writers == set()
    (who, reason), = factory.failed
    assert who is connector and reason.check(error.ConnectError)
    assert "reactor shut down" in reason.getErrorMessage()
    assert sock.fileno() == -1  # closed
    connector.doWrite()  # a late writable event: nothing
    assert len(factory.failed) == 1


def test_stop_connecting_is_a_user_error_once() -> None:
    reactor, factory = Reactor(), Factory()
    connector, sock = connecting(reactor, factory)
    connector.stopConnecting()
    connector.stopConnecting()
    connector.connectionLost(Failure(error.ConnectionLost()))
    assert reactor.writers == set() and sock.fileno() == -1
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
    assert reactor.writers == set()


def test_stopped_before_the_answer_never_connects() -> None:
    reactor, factory = Reactor(), Factory()
    connector = lean_connect(reactor, None, Endpoint("backend.test", 80), factory)
    connector.stopConnecting()
    connector.stopConnecting()
    (_, d), = reactor.resolving
    d.callback("127.0.0.1")
    (who, reason), = factory.failed
    assert reason.check(error.UserError)
    assert reactor.writers == set()
