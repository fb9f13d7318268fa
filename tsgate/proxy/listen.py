"""
A lean listening port: batched ``accept`` on a non-blocking socket.

Twisted's ``tcp.Port`` builds an address object and a ``tcp.Server`` (with
its log prefix) per accepted socket and calls ``buildProtocol(addr)``. This
port accepts up to :data:`ACCEPT_BATCH` sockets per readiness event (until
``EAGAIN``), wraps each in a :class:`~tsgate.proxy.transport.LeanTransport`
and asks the factory for a protocol with no address (the pipeline formats
the peer's address only when something reads it). The listen backlog is the
system's maximum (``net.core.somaxconn``), as HAProxy and Envoy ask.

It needs a reactor with ``IReactorFDSet``; :func:`lean_listen` returns None
otherwise, and the caller listens the ordinary Twisted way.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tsgate.proxy.poller import loop_for
from tsgate.proxy.sockets import close_quietly, twisted_address
from tsgate.proxy.transport import LeanTransport

log = Logger(namespace="tsgate.gateway")

#: sockets accepted per readiness event at most (then other events get a turn)
ACCEPT_BATCH = 64

_SOMAXCONN = "/proc/sys/net/core/somaxconn"

#: Linux copies a listening TCP socket's TCP_NODELAY to the sockets it
#: accepts: set once on the port, it costs no system call per connection.
NODELAY_INHERITED = sys.platform.startswith("linux")


def max_backlog(default: int = 4096) -> int:
    """The largest listen backlog the system grants (``net.core.somaxconn``)."""
    try:
        with open(_SOMAXCONN, encoding="ascii") as f:
            return max(int(f.read().strip()), 128)
    except (OSError, ValueError):
        return max(socket.SOMAXCONN, default)


#: errors that mean "this one connection is gone" or "out of descriptors now":
#: the port keeps listening
_ACCEPT_TRANSIENT = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENOBUFS,
                     errno.ENOMEM, errno.EMFILE, errno.ENFILE)


@implementer(IListeningPort, IReadDescriptor)
class LeanPort:
    """One listening socket feeding one factory (see the module docstring)."""

    def __init__(self, reactor: Any, sock: socket.socket, factory: Any) -> None:
        self.reactor = reactor
        self.socket = sock
        self.fd = sock.fileno()
        self.factory = factory
        self.listening = False
        self.read_size: Optional[int] = None
        #: where the accepted sockets wait for readiness (tsgate.proxy.poller)
        self.loop = loop_for(reactor)
        #: accepted sockets come with TCP_NODELAY set (:func:`listen_nodelay`)
        self.nodelay = False

    def startListening(self) -> None:
        if not self.listening:
            self.listening = True
            self.loop.addReader(self)

    def stopListening(self) -> defer.Deferred[None]:
        if self.listening:
            self.listening = False
            self.loop.discard(self)  # before the close (an epoll set forgets it with the close)
            close_quietly(self.socket)
        return defer.succeed(None)

    def getHost(self) -> Any:
        return twisted_address(self.socket.getsockname(), self.socket.family)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "tsgate-listener"

    def connectionLost(self, reason: Failure) -> None:
        """The reactor is shutting down."""
        self.stopListening()

    def doRead(self) -> None:
        accept = self.socket.accept
        build = self.factory.buildProtocol
        reactor = self.reactor
        loop = self.loop
        nodelay = self.nodelay
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    return None
                if exc.errno in _ACCEPT_TRANSIENT:
                    log.warn("accept failed: {error}", error=exc)
                    return None
                raise
            sock.setblocking(False)
            transport = LeanTransport(sock, reactor, peer, loop)
            transport.nodelay = nodelay
            try:
                protocol = build(None)
            except Exception:
                log.failure("buildProtocol failed")
                close_quietly(sock)
                continue
            if protocol is None:
                close_quietly(sock)
                continue
            transport.start(protocol)
        return None


def listen_nodelay(sock: socket.socket) -> bool:
    """
    Set TCP_NODELAY on a listening TCP socket, where the sockets it accepts
    inherit it (:data:`NODELAY_INHERITED`); True if they now come with it.
    """
    if not NODELAY_INHERITED or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True


def lean_listen(reactor: Any, factory: Any, port: int, interface: str,
                backlog: Optional[int] = None) -> Optional[LeanPort]:
    """
    Listen on ``interface:port`` with a :class:`LeanPort`, or None when the
    reactor cannot watch file descriptors (use Twisted's ``listenTCP``).
    Raises ``twisted.internet.error.CannotListenError`` as ``listenTCP`` does.
    """
    from twisted.internet.error import CannotListenError

    if not IReactorFDSet.providedBy(reactor):
        return None
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface, port))
        sock.listen(backlog or max_backlog())
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise CannotListenError(interface, port, exc) from None
    lean = LeanPort(reactor, sock, factory)
    lean.nodelay = listen_nodelay(sock)
    lean.startListening()
    return lean


def inherited_socket(reactor: Any, description: str) -> Optional[socket.socket]:
    """
    The TCP socket a ``systemd:domain=INET|INET6:index=N`` (or ``name=``)
    endpoint names, or None: another kind of endpoint or socket, or nothing
    handed over (Twisted's endpoint then says why). Socket activation and
    ``--workers`` both hand sockets over this way.

    The descriptor is the one Twisted's ``systemd:`` endpoint parser finds:
    Twisted reads ``LISTEN_FDS`` once, when ``twisted.internet.endpoints`` is
    imported, and removes it from the environment, so by the time a gateway
    listens the environment says nothing any more. The returned socket owns
    the inherited descriptor, as Twisted's adopted port does (it duplicates
    it and closes the original): once the port stops listening nothing in
    this process keeps the socket open, so a draining worker does not leave
    new connections waiting in a queue no one accepts from.
    """
    kind, _, rest = description.partition(":")
    if kind != "systemd":
        return None
    options = dict(field.split("=", 1) for field in rest.split(":") if "=" in field)
    if options.get("domain") not in ("INET", "INET6"):
        return None
    from twisted.internet import endpoints

    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except Exception:  # nothing handed over: Twisted's endpoint says why
        return None
    fd = getattr(endpoint, "fileno", None)  # AdoptedStreamServerEndpoint's descriptor
    if not isinstance(fd, int):
        return None
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # closed already
        return None
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        sock.detach()  # not ours: left as it was, for Twisted's endpoint
        return None
    sock.setblocking(False)
    return sock


def lean_adopt(reactor: Any, factory: Any, description: str) -> Optional[LeanPort]:
    """A :class:`LeanPort` on an inherited socket (see :func:`inherited_socket`), or None."""
    if not IReactorFDSet.providedBy(reactor):
        return None
    sock = inherited_socket(reactor, description)
    if sock is None:
        return None
    lean = LeanPort(reactor, sock, factory)
    lean.nodelay = listen_nodelay(sock)
    lean.startListening()
    return lean
