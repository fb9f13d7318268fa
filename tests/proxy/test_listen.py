"""
The lean listening port (tsgate.proxy.listen) on real 127.0.0.1 sockets:
batched accept, the backlog, accept errors, and sockets handed over the
systemd way. Each test's docstring names the bug it catches. IPv6 (``::1``)
is not used: the tests' sockets stay on 127.0.0.0/8.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet import endpoints, error
from twisted.python.failure import Failure
from twisted.python.systemd import ListenFDs

from tests.proxy.test_transport import Built, Recorder, SelectReactor
from tsgate.proxy import listen
from tsgate.proxy.listen import (
    ACCEPT_BATCH,
    LeanPort,
    inherited_socket,
    lean_adopt,
    lean_listen,
    max_backlog,
)


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for c in made:
        c.close()


def listening(reactor: Any, factory: Any) -> LeanPort:
    port = lean_listen(reactor, factory, 0, "127.0.0.1")
    assert port is not None
    return port


def connect(port: LeanPort, clients: list[socket.socket], n: int) -> None:
    address = port.getHost()
    for _ in range(n):
        clients.append(socket.create_connection((address.host, address.port)))


# -- the backlog -------------------------------------------------------------------


def test_backlog_is_somaxconn_with_a_floor_and_a_fallback(tmp_path: Path,
                                                          monkeypatch: Any) -> None:
    """Catches: somaxconn not read; the floor of 128 lost; a bad or missing file raising."""
    path = tmp_path / "somaxconn"
    monkeypatch.setattr(listen, "_SOMAXCONN", str(path))
    path.write_text("8192\n")
    assert max_backlog() == 8192
    path.write_text("5\n")
    assert max_backlog() == 128
    path.write_text("many\n")
    assert max_backlog() == max(socket.SOMAXCONN, 4096)
    assert max_backlog(99999) == 99999
    path.unlink()
    assert max_backlog(99999) == 99999 and max_backlog(1) == socket.SOMAXCONN


class Recording(socket.socket):
    backlogs: list[int] = []

    def listen(self, backlog: int = 0) -> None:
        self.backlogs.append(backlog)
        super().listen(backlog)


def test_listen_asks_for_the_given_backlog_or_the_systems_maximum(monkeypatch: Any) -> None:
    """Catches: the backlog argument ignored; somaxconn not asked for by default."""
    monkeypatch.setattr(socket, "socket", Recording)
    monkeypatch.setattr(listen, "max_backlog", lambda: 777)
    Recording.backlogs = []
    reactor = SelectReactor()
    a = lean_listen(reactor, Built(), 0, "127.0.0.1", backlog=33)
    b = lean_listen(reactor, Built(), 0, "127.0.0.1")
    assert Recording.backlogs == [33, 777]
    for port in (a, b):
        assert port is not None
        assert port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert port.socket.getblocking() is False and port.socket.family == socket.AF_INET
        port.stopListening()


def test_a_port_in_use_is_cannot_listen_and_the_socket_is_closed(monkeypatch: Any) -> None:
    """Catches: bind errors escaping as OSError; the failed socket left open."""
    made: list[socket.socket] = []

    class Keeps(socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    reactor = SelectReactor()
    port = listening(reactor, Built())
    monkeypatch.setattr(socket, "socket", Keeps)
    with pytest.raises(error.CannotListenError) as caught:
        lean_listen(reactor, Built(), port.getHost().port, "127.0.0.1")
    assert caught.value.port == port.getHost().port and caught.value.interface == "127.0.0.1"
    assert made and made[-1].fileno() == -1
    port.stopListening()


# -- accepting ----------------------------------------------------------------------


def test_accept_takes_at_most_a_batch_per_event_then_stops_on_eagain(clients: Any) -> None:
    """Catches: the batch size changed (or unbounded); EAGAIN raising; sockets left blocking."""
    reactor = SelectReactor()
    factory = Built()
    port = listening(reactor, factory)
    assert port in reactor.readers and port.listening
    connect(port, clients, ACCEPT_BATCH + 3)
    port.doRead()
    assert len(factory.protocols) == ACCEPT_BATCH == 64
    port.doRead()
    assert len(factory.protocols) == ACCEPT_BATCH + 3
    port.doRead()  # none left: EAGAIN
    assert len(factory.protocols) == ACCEPT_BATCH + 3
    transport: Any = factory.protocols[0].transport
    assert transport.socket.getblocking() is False and transport.loop is port.loop
    assert transport in reactor.readers  # started: reading
    peers = {c.getsockname()[1] for c in clients}
    assert {cast(Any, p.transport).getPeer().port for p in factory.protocols} == peers
    port.stopListening()


class Refusing:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.protocols: list[Recorder] = []

    def buildProtocol(self, addr: Any) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer:
            protocol = Recorder()
            self.protocols.append(protocol)
            return protocol
        return None


def test_a_refused_or_failed_protocol_closes_that_socket_only(clients: Any) -> None:
    """Catches: buildProtocol's error escaping or ending the batch; None's socket kept open."""
    reactor = SelectReactor()
    factory = Refusing([RuntimeError("boom"), None, True])
    port = listening(reactor, factory)
    connect(port, clients, 3)
    port.doRead()
    assert len(factory.protocols) == 1 and factory.answers == []
    for c in clients[:2]:
        c.settimeout(5)
        assert c.recv(1) == b""  # closed by the port
    accepted = cast(Any, factory.protocols[0].transport).getPeer().port
    assert accepted == clients[2].getsockname()[1]
    port.stopListening()


class Failing:
    family = socket.AF_INET

    def __init__(self, code: int) -> None:
        self.code = code
        self.calls = 0

    def accept(self) -> Any:
        self.calls += 1
        raise OSError(self.code, os.strerror(self.code))

    def fileno(self) -> int:
        return 99


@pytest.mark.parametrize("code", [errno.ECONNABORTED, errno.EPROTO, errno.EPERM,
                                  errno.ENOBUFS, errno.ENOMEM, errno.EMFILE, errno.ENFILE,
                                  errno.EAGAIN, errno.EINTR])
def test_transient_accept_errors_end_the_batch_and_keep_listening(code: int) -> None:
    """Catches: a transient accept error (out of descriptors, aborted) raising or retried."""
    sock = Failing(code)
    port = LeanPort(SelectReactor(), sock, Built())  # type: ignore[arg-type]
    port.doRead()
    assert sock.calls == 1


def test_other_accept_errors_raise() -> None:
    """Catches: a real error (a closed socket) swallowed as transient."""
    port = LeanPort(SelectReactor(), Failing(errno.EBADF), Built())  # type: ignore[arg-type]
    with pytest.raises(OSError):
        port.doRead()


def test_start_and_stop_listening_once(clients: Any) -> None:
    """Catches: watched twice; stop not closing or not idempotent; shutdown not stopping."""
    reactor = SelectReactor()
    port = listening(reactor, Built())
    port.startListening()
    assert reactor.readers == {port}
    assert port.fileno() == port.socket.fileno() and port.logPrefix() == "tsgate-listener"
    address = port.getHost()
    assert address.host == "127.0.0.1" and address.port > 0
    d = port.stopListening()
    assert d.called and reactor.readers == set() and port.socket.fileno() == -1
    assert not port.listening
    port.stopListening()
    with pytest.raises(OSError):
        socket.create_connection((address.host, address.port), timeout=5).close()
    other = listening(reactor, Built())
    other.connectionLost(Failure(error.ConnectionDone()))  # the reactor's shutdown
    assert reactor.readers == set() and other.socket.fileno() == -1


# -- sockets handed over ------------------------------------------------------------


@pytest.fixture
def handed(monkeypatch: Any) -> Iterator[Any]:
    """Sockets as systemd (or ``--workers``) hands them over: Twisted's ListenFDs."""
    def hand(socks: list[Any], names: tuple[str, ...] = ()) -> None:
        fds = [s if isinstance(s, int) else s.fileno() for s in socks]
        monkeypatch.setattr(endpoints._SystemdParser, "_sddaemon", ListenFDs(fds, names))
    yield hand


def test_an_inherited_tcp_socket_is_adopted_and_accepts(handed: Any, clients: Any) -> None:
    """Catches: the handed-over socket not found by index or name, blocking, or unwatched."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    handed([server], ("web",))
    reactor = SelectReactor()
    sock = inherited_socket(reactor, "systemd:domain=INET:name=web")
    assert sock is not None and sock.fileno() == server.fileno()
    assert sock.getblocking() is False
    sock.detach()
    factory = Built()
    port = lean_adopt(reactor, factory, "systemd:domain=INET:index=0")
    assert port is not None and port in reactor.readers and port.listening
    clients.append(socket.create_connection(server.getsockname()))
    reactor.until(lambda: bool(factory.protocols))
    port.stopListening()  # the port owns the descriptor now
    assert server.fileno() != -1
    server.detach()


def test_what_is_not_an_inherited_tcp_socket_is_left_to_twisted(handed: Any) -> None:
    """Catches: another endpoint kind, a UNIX or UDP socket taken; the UDP socket closed."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    handed([udp, unix])
    reactor = SelectReactor()
    assert inherited_socket(reactor, "tcp:0:interface=127.0.0.1") is None
    assert inherited_socket(reactor, "systemd:domain=UNIX:index=1") is None
    assert inherited_socket(reactor, "systemd:domain=INET:index=0") is None  # a UDP socket
    assert udp.getsockname()[1] > 0  # still open: left as it was
    assert inherited_socket(reactor, "systemd:domain=INET:index=1") is None  # a UNIX socket
    assert inherited_socket(reactor, "systemd:domain=INET:index=5") is None  # nothing there
    assert inherited_socket(reactor, "systemd:domain=INET6:index=5") is None
    assert lean_adopt(reactor, Built(), "systemd:domain=INET:index=0") is None
    udp.close()
    unix.close()


def test_a_closed_inherited_descriptor_is_none(handed: Any) -> None:
    """Catches: the OSError of a descriptor closed already escaping."""
    server = socket.socket()
    fd = server.fileno()
    server.close()
    handed([fd])
    assert inherited_socket(SelectReactor(), "systemd:domain=INET:index=0") is None


def test_adopt_needs_a_reactor_that_watches_descriptors(handed: Any) -> None:
    """Catches: lean_adopt on a reactor without IReactorFDSet."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    handed([server])
    try:
        assert lean_adopt(object(), Built(), "systemd:domain=INET:index=0") is None
        assert server.getsockname()[1] > 0  # not taken
    finally:
        server.close()


def test_accepted_transports_close_through_the_ports_reactor(clients: Any) -> None:
    """Catches: the accepted transport built without the reactor (its close never scheduled)."""
    reactor = SelectReactor()
    factory = Built()
    port = listening(reactor, factory)
    connect(port, clients, 1)
    port.doRead()
    transport: Any = factory.protocols[0].transport
    assert transport.reactor is reactor
    transport.loseConnection()
    reactor.until(lambda: bool(factory.protocols[0].events))
    clients[0].settimeout(5)
    assert clients[0].recv(1) == b""
    port.stopListening()


def test_accept_errors_and_refusals_are_logged_and_closed_explicitly(
        clients: Any, monkeypatch: Any) -> None:
    """
    Catches: the warning and error lines' texts lost (what an operator greps
    for); a refused socket left to the garbage collector (ResourceWarning).
    """
    import gc
    import warnings

    from twisted.logger import Logger

    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(listen, "log", Logger(namespace="tsgate.gateway", observer=observer))
    aborted = OSError(errno.ECONNABORTED, "aborted")

    class Aborting:
        family = socket.AF_INET

        def accept(self) -> Any:
            raise aborted

        def fileno(self) -> int:
            return 99

    LeanPort(SelectReactor(), Aborting(), Built()).doRead()  # type: ignore[arg-type]
    reactor = SelectReactor()
    factory = Refusing([RuntimeError("boom"), None])
    port = listening(reactor, factory)
    connect(port, clients, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        port.doRead()
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert [e["log_format"] for e in events] == ["accept failed: {error}", "buildProtocol failed"]
    assert events[0]["error"] is aborted
    port.stopListening()


def test_ipv6_interfaces_get_an_ipv6_socket_and_address(monkeypatch: Any) -> None:
    """Catches: the family from the interface (``:``) lost; the port's address always IPv4."""
    from twisted.internet.address import IPv6Address

    families: list[int] = []

    class NoBind(socket.socket):
        def __init__(self, family: int = -1, *args: Any, **kwargs: Any) -> None:
            families.append(family)
            super().__init__(family, *args, **kwargs)

        def bind(self, address: Any) -> None:  # no IPv6 socket is bound here (127.0.0.0/8 only)
            raise OSError(errno.EADDRNOTAVAIL, "not here")

    monkeypatch.setattr(socket, "socket", NoBind)
    with pytest.raises(error.CannotListenError) as caught:
        lean_listen(SelectReactor(), Built(), 0, "::1")
    assert families == [socket.AF_INET6]
    assert isinstance(caught.value.socketError, OSError)
    assert caught.value.socketError.errno == errno.EADDRNOTAVAIL

    class Six:
        family = socket.AF_INET6

        def fileno(self) -> int:
            return 98

        def getsockname(self) -> Any:
            return ("::1", 8443, 0, 0)

    host = LeanPort(SelectReactor(), Six(), Built()).getHost()  # type: ignore[arg-type]
    assert isinstance(host, IPv6Address) and host.port == 8443


def test_an_inet6_systemd_socket_is_taken_too(handed: Any) -> None:
    """Catches: ``domain=INET6`` not recognised (an IPv6 listener handed over left to Twisted)."""
    server = socket.socket()  # an IPv4 socket stands in: the domain option is what is read
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    handed([server])
    try:
        sock = inherited_socket(SelectReactor(), "systemd:domain=INET6:index=0")
        assert sock is not None and sock.fileno() == server.fileno()
        sock.detach()
    finally:
        server.close()


def test_accepted_sockets_keep_accepts_answer_and_wait_in_the_ports_loop(
        clients: Any, monkeypatch: Any) -> None:
    """
    Catches: the peer address from accept() dropped (a getpeername per
    connection); the accepted transports not in the port's loop; a refused
    socket not closed by the port (``close_quietly(None)``).
    """
    from tsgate.proxy.poller import ReactorLoop
    from tsgate.proxy.sockets import close_quietly as real_close

    closed: list[Any] = []

    def close(sock: Any) -> None:
        closed.append(sock)
        real_close(sock)

    monkeypatch.setattr(listen, "close_quietly", close)
    reactor = SelectReactor()
    factory = Refusing([None, True])
    port = listening(reactor, factory)
    port.loop = ReactorLoop(reactor)  # the port's own, not the reactor's cached one
    connect(port, clients, 2)
    port.doRead()
    transport: Any = factory.protocols[0].transport
    assert transport.loop is port.loop
    assert transport.peer == clients[1].getsockname()
    assert len(closed) == 1 and isinstance(closed[0], socket.socket)
    assert closed[0].fileno() == -1
    port.stopListening()


def test_accepted_sockets_inherit_tcp_nodelay_from_the_port(clients: Any) -> None:
    """
    Catches: TCP_NODELAY not set on the listening socket (then every
    accepted socket would lack it: connectionMade skips its setsockopt), the
    transport not told, or setTcpNoDelay(False) skipped.
    """
    reactor = SelectReactor()
    factory = Built()
    port = listening(reactor, factory)
    assert port.nodelay is listen.NODELAY_INHERITED
    connect(port, clients, 1)
    port.doRead()
    transport: Any = factory.protocols[0].transport
    sock = transport.socket
    if listen.NODELAY_INHERITED:
        assert port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert transport.nodelay is True
    transport.setTcpNoDelay(True)
    assert transport.getTcpNoDelay()
    transport.setTcpNoDelay(False)
    assert not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert transport.nodelay is False
    transport.setTcpNoDelay(True)  # not skipped once cleared
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    port.stopListening()


def test_an_adopted_socket_gets_tcp_nodelay_too(handed: Any) -> None:
    """Catches: lean_adopt not setting TCP_NODELAY on the inherited socket."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    handed([server])
    port = lean_adopt(SelectReactor(), Built(), "systemd:domain=INET:index=0")
    assert port is not None
    try:
        assert port.nodelay is listen.NODELAY_INHERITED
        assert bool(port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) \
            is listen.NODELAY_INHERITED
    finally:
        port.stopListening()  # the port owns the descriptor now
        server.detach()


def test_listen_nodelay_only_where_inherited_and_only_if_set(monkeypatch: Any) -> None:
    """
    Catches: TCP_NODELAY claimed inherited off Linux, or when setting it
    failed (accepted sockets would then go without it), or a LeanPort not
    made by lean_listen/lean_adopt claiming it.
    """
    sock = socket.socket()
    try:
        assert LeanPort(SelectReactor(), sock, Built()).nodelay is False
        monkeypatch.setattr(listen, "NODELAY_INHERITED", False)
        assert listen.listen_nodelay(sock) is False
        assert not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        monkeypatch.setattr(listen, "NODELAY_INHERITED", True)
        assert listen.listen_nodelay(sock) is True
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()
    assert listen.listen_nodelay(sock) is False  # closed: setsockopt fails
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert listen.listen_nodelay(unix) is False
    finally:
        unix.close()
