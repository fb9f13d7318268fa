"""
A lean upstream connect: a non-blocking ``connect`` watched with ``addWriter``.

Twisted's ``connectTCP`` builds a ``Connector``, a ``tcp.Client``, resolves
the host through the reactor's resolver with a ``Deferred`` even for an IP
literal, and logs through the factory. For an endpoint that is an IP
address this :data:`~tsgate.proxy.stages.Connect` opens the socket itself
and, once writable, hands a :class:`~tsgate.proxy.transport.LeanTransport`
to the factory's protocol (at once when the connect completed before
``connect`` returned, as on loopback); failures reach ``clientConnectionFailed`` with
Twisted's own exceptions (so ``UF`` details read as before). Host names (DNS
clusters) go through the reactor's resolver first, as ``connectTCP`` does;
reactors without ``IReactorFDSet`` use ``connectTCP`` itself.
The connect timeout stays the pipeline's own timer.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from tsgate.proxy.poller import loop_for
from tsgate.proxy.sockets import close_quietly
from tsgate.proxy.transport import LeanTransport

_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR)


_FAMILIES: dict[str, int] = {}


def _family(address: str) -> int:
    """AF_INET / AF_INET6 for an IP literal; 0 for a host name (memoized: endpoints repeat)."""
    family = _FAMILIES.get(address)
    if family is None:
        try:
            version = ipaddress.ip_address(address).version
            family = socket.AF_INET6 if version == 6 else socket.AF_INET
        except ValueError:
            family = 0
        if len(_FAMILIES) < 65536:
            _FAMILIES[address] = family
    return family


@implementer(IWriteDescriptor)
class LeanConnector:
    """One connect attempt; ``stopConnecting()`` as on Twisted's connectors."""

    __slots__ = ("reactor", "socket", "fd", "factory", "pending", "loop")

    def __init__(self, reactor: Any, sock: socket.socket, factory: Any) -> None:
        self.reactor = reactor
        self.loop = loop_for(reactor)
        self.socket = sock
        self.fd = sock.fileno()
        self.factory = factory
        self.pending = True

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "tsgate-connect"

    def doWrite(self) -> None:
        if not self.pending:
            return None
        self.pending = False
        # the socket is the transport's from here (or closed): one hand-over,
        # no unwatch-rewatch of the same descriptor
        self.loop.discard(self)
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.failed(error.getConnectError((code, os.strerror(code))))
            return None
        self.connected()
        return None

    def connected(self) -> None:
        """The socket is connected: hand it to a transport and the factory's protocol."""
        transport = LeanTransport(self.socket, self.reactor, None, self.loop)
        protocol = self.factory.buildProtocol(None)
        if protocol is None:
            transport.loseConnection()
            return
        transport.start(protocol)

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor dropped the socket: an error or hang-up event while
        connecting (a refused connect can arrive so), or the reactor's shutdown.
        """
        if not self.pending:
            return
        self.pending = False
        self.loop.discard(self)
        try:
            code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            code = exc.errno or errno.ECONNREFUSED
        if code:
            self.failed(error.getConnectError((code, os.strerror(code))))
        else:
            self.failed(error.ConnectError(string=reason.getErrorMessage()))

    def stopConnecting(self) -> None:
        if not self.pending:
            return
        self.pending = False
        self.loop.discard(self)
        self.failed(error.UserError(string="stopConnecting was called"))

    def failed(self, exc: Exception) -> None:
        self.loop.discard(self)
        close_quietly(self.socket)
        self.factory.clientConnectionFailed(self, Failure(exc))


class ResolvingConnector:
    """
    A connect to a host name: the reactor's resolver first (as ``connectTCP``
    does: ``DNSLookupError`` on failure, so the access log says ``DF``), then
    a :class:`LeanConnector` to the address.
    """

    __slots__ = ("reactor", "port", "factory", "inner", "stopped")

    def __init__(self, reactor: Any, host: str, port: int, factory: Any) -> None:
        self.reactor = reactor
        self.port = port
        self.factory = factory
        self.inner: Any = None
        self.stopped = False
        reactor.resolve(host).addCallbacks(self._resolved, self._not_resolved)

    def _resolved(self, address: str) -> None:
        if not self.stopped:
            self.inner = connect_address(self.reactor, address, self.port, self.factory)

    def _not_resolved(self, reason: Failure) -> None:
        if not self.stopped:
            self.stopped = True
            self.factory.clientConnectionFailed(self, reason)

    def stopConnecting(self) -> None:
        if self.inner is not None:
            self.inner.stopConnecting()
        elif not self.stopped:
            self.stopped = True
            self.factory.clientConnectionFailed(
                self, Failure(error.UserError(string="stopConnecting was called")))


def connect_address(reactor: Any, address: str, port: int, factory: Any,
                    family: int = 0) -> LeanConnector:
    """A non-blocking connect to an IP address (see the module docstring)."""
    sock = socket.socket(family or _family(address) or socket.AF_INET,
                         socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    connector = LeanConnector(reactor, sock, factory)
    code = sock.connect_ex((address, port))
    if code and code not in _IN_PROGRESS:
        connector.pending = False
        # reported on the next turn, as connectTCP does (the caller is mid-stage)
        reactor.callLater(0, connector.failed, error.getConnectError((code, os.strerror(code))))
        return connector
    if code == 0 or _established(sock):
        # Loopback and other near peers have answered the SYN before connect
        # returns: connected now, without waiting a turn for writability.
        connector.pending = False
        connector.connected()
        return connector
    connector.loop.addWriter(connector)
    return connector


def _established(sock: socket.socket) -> bool:
    """Whether a connect in progress has already completed (it has a peer)."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def lean_connect(reactor: Any, cluster: Any, endpoint: Any, factory: Any) -> Any:
    """
    A :data:`~tsgate.proxy.stages.Connect` for a reactor that provides
    ``IReactorFDSet`` (``ProxyContext.runtime`` checks, once): IP endpoints
    connect at once, host names after the reactor's resolver.
    """
    family = _family(endpoint.address)
    if family:
        return connect_address(reactor, endpoint.address, endpoint.port, factory, family)
    return ResolvingConnector(reactor, endpoint.address, endpoint.port, factory)
