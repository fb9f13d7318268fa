"""
A lean upstream connect: a non-blocking ``connect`` watched with ``addWriter``.

Twisted's ``connectTCP`` builds a ``Connector``, a ``tcp.Client``, resolves
the host through the reactor's resolver with a ``Deferred`` even for an IP
literal, and logs through the factory. For an endpoint that is an IP
address this :data:`~tsgate.proxy.stages.Connect` opens the socket itself
and, once writable, hands a :class:`~tsgate.proxy.transport.LeanTransport`
to the factory's protocol; failures reach ``clientConnectionFailed`` with
Twisted's own exceptions (so ``UF`` details read as before). Host names (DNS
clusters) and reactors without ``IReactorFDSet`` go through ``connectTCP``.
The connect timeout stays the pipeline's own timer.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IReactorFDSet, IWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from tsgate.proxy.sockets import close_quietly
from tsgate.proxy.stages import connect_tcp
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

    __slots__ = ("reactor", "socket", "fd", "factory", "pending")

    def __init__(self, reactor: Any, sock: socket.socket, factory: Any) -> None:
        self.reactor = reactor
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
        self.reactor.removeWriter(self)
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.failed(error.getConnectError((code, os.strerror(code))))
            return None
        transport = LeanTransport(self.socket, self.reactor)
        protocol = self.factory.buildProtocol(None)
        if protocol is None:
            transport.loseConnection()
            return None
        transport.start(protocol)
        return None

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor dropped the socket: an error or hang-up event while
        connecting (a refused connect can arrive so), or the reactor's shutdown.
        """
        if not self.pending:
            return
        self.pending = False
        self.reactor.removeWriter(self)
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
        self.reactor.removeWriter(self)
        self.failed(error.UserError(string="stopConnecting was called"))

    def failed(self, exc: Exception) -> None:
        close_quietly(self.socket)
        self.factory.clientConnectionFailed(self, Failure(exc))


def lean_connect(reactor: Any, cluster: Any, endpoint: Any, factory: Any) -> Any:
    """A :data:`~tsgate.proxy.stages.Connect`: lean for IP endpoints, else ``connectTCP``."""
    family = _family(endpoint.address)
    clock: Any = reactor
    if not family or not IReactorFDSet.providedBy(reactor):
        return connect_tcp(reactor, cluster, endpoint, factory)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    connector = LeanConnector(reactor, sock, factory)
    code = sock.connect_ex((endpoint.address, endpoint.port))
    if code and code not in _IN_PROGRESS:
        connector.pending = False
        # reported on the next turn, as connectTCP does (the caller is mid-stage)
        clock.callLater(0, connector.failed, error.getConnectError((code, os.strerror(code))))
        return connector
    reactor.addWriter(connector)
    return connector
