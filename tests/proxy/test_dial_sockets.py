"""
The lean connector (tsgate.proxy.dial) on real 127.0.0.1 sockets, with a
reactor that records interest and ``callLater``: a connect in progress
completes on writability, a refused one fails with Twisted's error, the
hand-over to a transport. Each test's docstring names the bug it catches.
IPv6 literals are only classified here (``_family``); no socket is opened on
``::1``: the tests stay on 127.0.0.0/8.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.internet import error
from twisted.python.failure import Failure

from tests.proxy.test_lean_units import Reactor
from tests.proxy.test_transport import Recorder
from tsgate.proxy import dial
from tsgate.proxy.dial import LeanConnector, ResolvingConnector, connect_address, lean_connect
from tsgate.routing import Endpoint


class Factory:
    def __init__(self, protocol: Any = "new") -> None:
        self.protocol = Recorder() if protocol == "new" else protocol
        self.built = 0
        self.failed: list[tuple[Any, Failure]] = []

    def buildProtocol(self, addr: Any) -> Any:
        assert addr is None
        self.built += 1
        return self.protocol

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.failed.append((connector, reason))


@pytest.fixture
def server() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s
    s.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def test_a_connect_in_progress_completes_on_writability(server: socket.socket) -> None:
    """Catches: doWrite not handing the socket to a transport; the connector left watched."""
    reactor, factory = Reactor(), Factory()
    sock = socket.create_connection(server.getsockname())  # connected; as if just completed
    sock.setblocking(False)
    connector = LeanConnector(reactor, sock, factory)
    connector.loop.addWriter(connector)
    assert connector.fileno() == sock.fileno()
    connector.doWrite()
    assert not connector.pending and factory.built == 1 and factory.failed == []
    transport: Any = factory.protocol.transport
    assert factory.protocol.made and transport.socket is sock and transport.loop is connector.loop
    assert reactor.writers == set() and reactor.readers == {transport}
    assert transport.getPeer().port == server.getsockname()[1]
    connector.doWrite()  # a late event: nothing more
    assert factory.built == 1
    accepted, _ = server.accept()
    accepted.sendall(b"hi")
    accepted.close()
    transport.doRead()
    assert factory.protocol.data == b"hi"


def test_a_refused_connect_on_loopback_fails_on_writability_with_refused() -> None:
    """Catches: SO_ERROR not read (a refused connect handed over as connected); the errno lost."""
    reactor, factory = Reactor(), Factory()
    connector = connect_address(reactor, "127.0.0.1", closed_port(), factory)
    # Linux answers EINPROGRESS, the refusal waits in SO_ERROR
    assert connector.pending and reactor.writers == {connector} and factory.failed == []
    connector.doWrite()
    (who, reason), = factory.failed
    assert who is connector and reason.check(error.ConnectionRefusedError)
    assert connector.socket.fileno() == -1 and reactor.writers == set()
    assert factory.built == 0 and not connector.pending


def test_a_connect_that_fails_at_once_is_reported_on_the_next_turn(monkeypatch: Any) -> None:
    """Catches: an immediate connect error reported inside the caller's call, or never."""
    class Refused(socket.socket):
        def connect_ex(self, address: Any) -> int:
            return errno.ECONNREFUSED

    monkeypatch.setattr(socket, "socket", Refused)
    reactor, factory = Reactor(), Factory()
    connector = connect_address(reactor, "127.0.0.1", 9, factory)
    assert factory.failed == [] and not connector.pending and reactor.writers == set()
    reactor.run_calls()
    (who, reason), = factory.failed
    assert who is connector and reason.check(error.ConnectionRefusedError)


def test_a_loopback_connect_is_handed_over_without_waiting(server: socket.socket) -> None:
    """Catches: the "connected before connect returned" check dropped (a turn lost per connect)."""
    reactor, factory = Reactor(), Factory()
    connector = connect_address(reactor, "127.0.0.1", server.getsockname()[1], factory)
    assert not connector.pending and factory.protocol.made
    assert reactor.writers == set() and reactor.readers == {factory.protocol.transport}
    assert connector.socket.family == socket.AF_INET
    assert connector.socket.getblocking() is False


def test_no_protocol_closes_the_connected_socket(server: socket.socket,
                                                 monkeypatch: Any) -> None:
    """
    Catches: a None protocol started (AttributeError) or its socket left open;
    a transport with no protocol calling one at its close (an error line).
    """
    from twisted.logger import Logger

    from tsgate.proxy import transport as module

    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(module, "log", Logger(namespace="tsgate.proxy", observer=observer))
    reactor, factory = Reactor(), Factory(protocol=None)
    connector = connect_address(reactor, "127.0.0.1", server.getsockname()[1], factory)
    accepted, _ = server.accept()
    reactor.run_calls()  # the close is due on the next turn
    accepted.settimeout(5)
    assert accepted.recv(1) == b""
    assert connector.socket.fileno() == -1 and events == []
    accepted.close()


def test_dropped_by_the_reactor_with_an_error_on_the_socket(server: socket.socket) -> None:
    """Catches: the socket's own error (SO_ERROR) replaced by the reactor's reason."""
    reactor, factory = Reactor(), Factory()
    connector = connect_address(reactor, "127.0.0.1", closed_port(), factory)
    connector.connectionLost(Failure(error.ConnectionLost("hang-up")))
    (who, reason), = factory.failed
    assert reason.check(error.ConnectionRefusedError)


def test_dropped_after_the_socket_is_closed_is_refused() -> None:
    """Catches: getsockopt's OSError escaping; its errno lost."""
    reactor, factory = Reactor(), Factory()
    sock = socket.socket()
    connector = LeanConnector(reactor, sock, factory)
    sock.close()
    connector.connectionLost(Failure(error.ConnectionLost("hang-up")))
    (who, reason), = factory.failed
    assert reason.check(error.ConnectError) and not reason.check(error.ConnectionRefusedError)
    assert str(reason.value) == "An error occurred while connecting: 9: Bad file descriptor."


def test_families_of_addresses_are_memoized_and_bounded(monkeypatch: Any) -> None:
    """Catches: v4/v6/name classified wrong; the memo unbounded (one entry per name forever)."""
    monkeypatch.setattr(dial, "_FAMILIES", {})
    assert dial._family("127.0.0.1") == socket.AF_INET
    assert dial._family("::1") == socket.AF_INET6
    assert dial._family("backend.test") == 0
    assert dial._FAMILIES == {"127.0.0.1": socket.AF_INET, "::1": socket.AF_INET6,
                              "backend.test": 0}
    dial._FAMILIES["10.9.9.9"] = socket.AF_INET6  # a memoized answer is used
    assert dial._family("10.9.9.9") == socket.AF_INET6
    full = {str(i): 0 for i in range(65535)}
    monkeypatch.setattr(dial, "_FAMILIES", full)
    assert dial._family("127.0.0.2") == socket.AF_INET and len(full) == 65536
    assert dial._family("127.0.0.3") == socket.AF_INET and len(full) == 65536


def test_ip_endpoints_connect_at_once_names_resolve_first(server: socket.socket) -> None:
    """Catches: an IP literal sent to the resolver; a resolved name not connected to its port."""
    class Resolving(Reactor):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[str] = []

        def resolve(self, name: str) -> Any:
            from twisted.internet import defer

            self.asked.append(name)
            return defer.succeed("127.0.0.1")

    reactor = Resolving()
    port = server.getsockname()[1]
    direct, named = Factory(), Factory()
    connector = lean_connect(reactor, None, Endpoint("127.0.0.1", port), direct)
    assert isinstance(connector, LeanConnector) and reactor.asked == []
    assert direct.protocol.made
    resolving = lean_connect(reactor, None, Endpoint("backend.test", port), named)
    assert isinstance(resolving, ResolvingConnector) and reactor.asked == ["backend.test"]
    assert named.protocol.made and resolving.inner is not None
    assert cast(Any, named.protocol.transport).getPeer().port == port
    resolving.stopConnecting()  # connected already: nothing to stop, nothing reported
    assert named.failed == []


def test_stop_after_the_answer_stops_the_inner_connect(monkeypatch: Any) -> None:
    """Catches: stopConnecting after the lookup not reaching the connect in progress."""
    from twisted.internet import defer

    class Later(Reactor):
        def resolve(self, name: str) -> Any:
            return defer.succeed("127.0.0.1")

    class Pending(socket.socket):
        def connect_ex(self, address: Any) -> int:
            return errno.EINPROGRESS

    reactor, factory = Later(), Factory()
    monkeypatch.setattr(socket, "socket", Pending)
    resolving = lean_connect(reactor, None, Endpoint("backend.test", 80), factory)
    assert resolving.inner is not None and resolving.inner.pending
    resolving.stopConnecting()
    (who, reason), = factory.failed
    assert who is resolving.inner and reason.check(error.UserError)
    assert reactor.writers == set()


STOPPED = "User aborted connection: stopConnecting was called."


def test_stop_connecting_says_so_in_twisteds_words() -> None:
    """Catches: the UserError's text changed (it reaches the access log's failure details)."""
    reactor = Reactor()
    direct = Factory()
    connector = LeanConnector(reactor, socket.socket(), direct)
    connector.stopConnecting()
    (who, reason), = direct.failed
    assert who is connector and str(reason.value) == STOPPED

    class Unanswered(Reactor):
        def resolve(self, name: str) -> Any:
            from twisted.internet import defer

            return defer.Deferred()

    named = Factory()
    resolving = lean_connect(Unanswered(), None, Endpoint("backend.test", 80), named)
    resolving.stopConnecting()
    (who, reason), = named.failed
    assert who is resolving and str(reason.value) == STOPPED


def test_an_ipv6_address_gets_an_ipv6_socket(monkeypatch: Any) -> None:
    """
    Catches: the family of an address given without one computed wrong
    (``or``/``and`` swapped, the address not passed). No IPv6 packet is
    sent: the socket's connect is replaced (the tests stay on 127.0.0.0/8).
    """
    families: list[int] = []

    class NoConnect(socket.socket):
        def __init__(self, family: int = -1, *args: Any, **kwargs: Any) -> None:
            families.append(family)
            super().__init__(family, *args, **kwargs)

        def connect_ex(self, address: Any) -> int:
            return errno.EINPROGRESS

    monkeypatch.setattr(socket, "socket", NoConnect)
    reactor, factory = Reactor(), Factory()
    six = connect_address(reactor, "2001:db8::1", 443, factory)
    four = connect_address(reactor, "127.0.0.1", 443, factory)
    assert families == [socket.AF_INET6, socket.AF_INET]
    six.stopConnecting()
    four.stopConnecting()
