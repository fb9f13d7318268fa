"""A connection pipeline on a MemoryReactorClock, for unit tests of the stages."""

from __future__ import annotations

from typing import Any

from twisted.internet import error as ierror
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from tests.support.routes import cluster as cluster  # re-exported
from tests.support.routes import route as route  # re-exported
from tsgate.accesslog import AccessLog, AccessRecord
from tsgate.hints.tls import TlsHintParser
from tsgate.proxy.connection import DownstreamProtocol
from tsgate.proxy.context import ProxyContext, Settings
from tsgate.routing import Listener


class HalfCloseTransport(StringTransport):
    """StringTransport plus the half-close and TCP calls the data path makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_closed = False
        self.connected = True

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def unregisterProducer(self) -> None:
        if self.producer is not None:  # as Twisted's FileDescriptor: no producer is fine
            super().unregisterProducer()


PEER = IPv4Address("TCP", "127.0.0.9", 40001)
LOCAL = IPv4Address("TCP", "127.0.0.1", 31400)


class Harness:
    """One listener's pipeline; ``accept`` and ``connect_upstream`` play Twisted's part."""

    def __init__(self, listener: Listener, providers: Any = (), **settings: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.records: list[AccessRecord] = []
        log = AccessLog(None)
        log.listeners.append(self.records.append)
        self.ctx = ProxyContext(reactor=self.reactor, access_log=log,
                                settings=Settings(**settings), inspectors=[TlsHintParser()],
                                stage_providers=list(providers))
        self.listener = listener

    def accept(self) -> tuple[DownstreamProtocol, HalfCloseTransport]:
        protocol = DownstreamProtocol(self.ctx, self.listener)
        transport = HalfCloseTransport(hostAddress=LOCAL, peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def connect_upstream(self, index: int = -1) -> tuple[Any, HalfCloseTransport]:
        host, port, factory, timeout, bind = self.reactor.tcpClients[index]
        upstream = factory.buildProtocol(None)
        assert upstream is not None
        transport = HalfCloseTransport()
        upstream.makeConnection(transport)
        return upstream, transport

    def close(self, protocol: DownstreamProtocol) -> None:
        protocol.connectionLost(Failure(ierror.ConnectionDone()))
