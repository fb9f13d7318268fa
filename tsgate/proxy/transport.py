"""
A lean TCP transport for relayed sockets, on the reactor's ``IReactorFDSet``.

Twisted's ``tcp.Server``/``tcp.Client`` carry what a relay never uses (a log
prefix built per connection, address objects, ``Deferred``s, TLS hooks) and
queue every write for a later reactor turn. This transport is the part a
relay needs: non-blocking ``recv``/``send``, writes sent at once when
nothing is queued, a bounded queue otherwise that pauses the registered
producer, half-close both ways, the ``IProtocol``/``IHalfCloseableProtocol``
calls in Twisted's order (``connectionLost`` on a later turn after
``loseConnection``). One ``__slots__`` object per socket; used by
:mod:`tsgate.proxy.listen` and :mod:`tsgate.proxy.dial`.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Optional

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    IReadWriteDescriptor,
    ITCPTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tsgate.proxy.poller import close_soon, loop_for
from tsgate.proxy.sockets import twisted_address

log = Logger(namespace="tsgate.proxy")

_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


@implementer(ITCPTransport, IConsumer, IPushProducer, IReadWriteDescriptor)
class LeanTransport:
    """One connected non-blocking TCP socket (see the module docstring)."""

    __slots__ = (
        "socket", "fd", "reactor", "protocol", "connected", "disconnecting", "disconnected",
        "bufferSize", "queue", "queued", "reading", "writing", "paused", "producer",
        "producer_paused", "write_closing", "write_closed", "read_closed", "half_close",
        "peer", "loop", "nodelay", "__weakref__",
    )

    def __init__(self, sock: socket.socket, reactor: Any, peer: Any = None,
                 loop: Any = None) -> None:
        self.socket = sock
        self.fd = sock.fileno()
        self.reactor = reactor
        #: where the socket waits for readiness (tsgate.proxy.poller)
        self.loop = loop if loop is not None else loop_for(reactor)
        self.protocol: Any = None
        self.connected = 1
        self.disconnecting = False
        self.disconnected = False
        self.bufferSize = 65536
        # Bytes the socket did not take yet: a list only while there are any
        # (an idle connection holds none; a deque would be 600 bytes each).
        self.queue: Optional[list[bytes]] = None
        self.queued = 0
        self.reading = False
        self.writing = False
        self.paused = False
        self.producer: Any = None
        self.producer_paused = False
        self.write_closing = False
        self.write_closed = False
        self.read_closed = False
        self.half_close = False
        self.peer = peer  # the socket address accept() returned, if any
        #: TCP_NODELAY known to be set (tsgate.proxy.listen: inherited at accept)
        self.nodelay = False

    def start(self, protocol: Any) -> None:
        """Attach ``protocol`` (``makeConnection``) and start reading."""
        self.protocol = protocol
        self.half_close = IHalfCloseableProtocol.providedBy(protocol)
        protocol.makeConnection(self)
        if self.connected and not self.paused and not self.disconnecting:
            self._start_reading()

    # -- IReadWriteDescriptor -------------------------------------------------

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "tsgate"

    def doRead(self) -> None:
        try:
            data = self.socket.recv(self.bufferSize)
        except OSError as exc:
            if exc.errno in _RETRY:
                return None
            self._lost(Failure(error.ConnectionLost(str(exc))))
            return None
        if data:
            self.protocol.dataReceived(data)
            return None
        # The peer's FIN.
        self._stop_reading()
        self.read_closed = True
        if not self.half_close:
            self._lost(_DONE)
            return None
        try:
            self.protocol.readConnectionLost()
        except Exception:
            log.failure("readConnectionLost failed")
            self._lost(Failure())
        return None

    def read_now(self) -> None:
        """One read at once, if reading (a caller at the end of its own work)."""
        if self.reading:
            self.doRead()

    def doWrite(self) -> None:
        queue = self.queue
        if queue:
            sock = self.socket
            if len(queue) > 1:  # one send for all of it (bounded by the high-water mark)
                queue[:] = [b"".join(queue)]
            data = queue[0]
            try:
                sent = sock.send(data)
            except OSError as exc:
                if exc.errno in _RETRY:
                    return None
                self._lost(Failure(error.ConnectionLost(str(exc))))
                return None
            self.queued -= sent
            if sent < len(data):
                queue[0] = data[sent:]
                return None
            self.queue = None
        self._stop_writing()
        if self.producer is not None and self.producer_paused:
            self.producer_paused = False
            self.producer.resumeProducing()
        if self.disconnecting:
            self._lost(_DONE)
        elif self.write_closing:
            self._shutdown_write()
        return None

    def connectionLost(self, reason: Failure) -> None:
        """The reactor's shutdown (``removeAll``), or our own close."""
        self._lost(reason)

    # -- ITransport ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.connected or self.write_closed or self.write_closing or not data:
            return
        queue = self.queue
        if queue is None:
            try:
                sent = self.socket.send(data)
            except OSError:  # EAGAIN; or an error doWrite reports on the next turn
                sent = 0
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
            queue = self.queue = []
            self._start_writing()
        queue.append(data)
        self.queued += len(data)
        if self.producer is not None and not self.producer_paused and \
                self.queued > self.bufferSize:
            self.producer_paused = True
            self.producer.pauseProducing()

    #: ``transport(data)`` is ``transport.write(data)``: the relay keeps the
    #: transport itself as its write function (no bound method per connection)
    __call__ = write

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Close after the queued bytes are sent; ``connectionLost`` on a later turn."""
        if not self.connected or self.disconnecting:
            return
        self.disconnecting = True
        self._stop_reading()
        if self.queue is None:
            # Nothing to flush: close on the next turn with the other closes
            # of this turn (one timer call, no writability event per socket).
            close_soon(self)
        else:
            self._start_writing()  # doWrite closes once the queue is empty

    def close_if_flushed(self) -> None:
        """A deferred close (``loseConnection``) comes due; bytes written since wait their turn."""
        if self.queue is None and not self.disconnected:
            self._lost(_DONE)

    def abortConnection(self) -> None:
        if self.connected:
            self.queue = None
            self.queued = 0
            self.disconnecting = True
            self._stop_reading()
            self._start_writing()

    def loseWriteConnection(self) -> None:
        """Send a FIN once the queued bytes are sent."""
        if not self.connected or self.write_closing or self.write_closed:
            return
        self.write_closing = True
        if self.queue is not None:
            return
        self._shutdown_write()

    def getPeer(self) -> Any:
        peer = self.peer
        if peer is None:
            try:
                peer = self.peer = self.socket.getpeername()
            except OSError:
                return IPv4Address("TCP", "0.0.0.0", 0)
        return twisted_address(peer, self.socket.family)

    def getHost(self) -> Any:
        return twisted_address(self.socket.getsockname(), self.socket.family)

    def setTcpNoDelay(self, enabled: bool) -> None:
        if enabled and self.nodelay:
            return  # set already (inherited from the listening socket)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, enabled)
        self.nodelay = bool(enabled)

    def getTcpNoDelay(self) -> bool:
        return bool(self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, enabled)

    def getTcpKeepAlive(self) -> bool:
        return bool(self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))

    # -- IConsumer / IPushProducer -----------------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if not streaming:
            raise ValueError("LeanTransport takes streaming producers only")
        self.producer = producer
        self.producer_paused = False
        if self.queued > self.bufferSize:
            self.producer_paused = True
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        self.paused = True
        self._stop_reading()

    def resumeProducing(self) -> None:
        self.paused = False
        if self.connected and not self.disconnecting and not self.read_closed:
            self._start_reading()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- internals -----------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self.reading:
            self.reading = True
            self.loop.addReader(self)

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.removeReader(self)

    def _start_writing(self) -> None:
        if not self.writing:
            self.writing = True
            self.loop.addWriter(self)

    def _stop_writing(self) -> None:
        if self.writing:
            self.writing = False
            self.loop.removeWriter(self)

    def _shutdown_write(self) -> None:
        self.write_closing = False
        self.write_closed = True
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if self.half_close:
            try:
                self.protocol.writeConnectionLost()
            except Exception:
                log.failure("writeConnectionLost failed")

    def _lost(self, reason: Failure) -> None:
        """Close the socket and tell the protocol, once (Twisted's order)."""
        if self.disconnected:
            return
        self.disconnected = True
        self.connected = 0
        self.reading = self.writing = False
        self.loop.discard(self)  # before the close (an epoll set forgets it with the close)
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        self.queue = None
        self.queued = 0
        self.fd = -1  # the reactor skips events still queued for the old descriptor
        try:
            self.socket.close()
        except OSError:
            pass
        protocol = self.protocol
        if protocol is not None:
            try:
                protocol.connectionLost(reason)
            except Exception:
                log.failure("connectionLost failed")


#: the reason of every clean close (read-only for protocols: one object for all)
_DONE = Failure(error.ConnectionDone())
