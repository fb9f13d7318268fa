"""
A lean TLS layer for the data path: pyOpenSSL over memory BIOs between a
connected transport and the connection's protocol.

It does what Twisted's ``TLSMemoryBIOProtocol`` does for tsgate, without what
a proxy never uses and pays for per connection (bench/results/
tls-profile-2026-12-02T0055Z-py-spy-summary.txt): no ``directlyProvides`` of
the transport's interfaces on each layer, no ``Failure`` built for a clean
close, no write buffering until the next reactor turn, and one
``dataReceived`` for everything a read decrypted. The ClientHello that
inspection already read is replayed into it (:func:`tsgate.tls.stage.wrap`),
which is why the BIOs are in memory and not the socket.

TLS half-close, both ways (TLS 1.3; RFC 8446 §6.1): the peer's close_notify,
or its TCP FIN after the handshake, is ``readConnectionLost`` for a
half-closeable protocol (the relay forwards it as a FIN); :meth:`half_close`
sends our close_notify after what is queued, then the TCP FIN, and keeps
reading. :meth:`loseConnection` sends close_notify and closes without
waiting for the peer's (as Envoy and HAProxy do).

``TSGATE_TLS=twisted`` selects Twisted's layer instead (the fallback; bench
comparisons).
"""

from __future__ import annotations

import socket
from typing import Any, Optional

from OpenSSL import SSL
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
)
from twisted.python.failure import Failure
from zope.interface import implementer

#: bytes asked of one SSL_read (it returns one record, at most 16 KiB)
RECV_SIZE = 16384
#: bytes taken from the outgoing BIO per read
FLUSH_SIZE = 65536


@implementer(IHalfCloseableProtocol, IConsumer, IPushProducer)
class TlsLayer:
    """
    The protocol of the socket's transport and the transport of the
    connection's protocol (see the module docstring).
    """

    __slots__ = (
        "transport", "wrappedProtocol", "conn", "handshake_done", "connected",
        "disconnecting", "lost", "write_closed", "read_closed", "reason", "pending",
        "half_closeable", "listener", "__weakref__",
    )

    def __init__(self, protocol: Any) -> None:
        self.transport: Any = None
        #: Twisted's name: tsgate.tls.server.session_of() finds the session on it
        self.wrappedProtocol = protocol
        self.conn: Any = None
        self.handshake_done = False
        self.connected = 1
        self.disconnecting = False
        self.lost = False
        self.write_closed = False
        self.read_closed = False
        #: why the TLS connection failed (handed to the protocol's connectionLost)
        self.reason: Optional[Failure] = None
        #: writes before the handshake completed
        self.pending: Optional[list[bytes]] = None
        self.half_closeable = IHalfCloseableProtocol.providedBy(protocol)
        self.listener = IHandshakeListener.providedBy(protocol)

    # -- as the socket transport's protocol -----------------------------------

    def makeConnection(self, transport: Any) -> None:  # noqa: N802
        self.transport = transport

    def start_client(self) -> None:
        """The client side speaks first: send the ClientHello."""
        self._handshake()

    def dataReceived(self, data: bytes) -> None:
        conn = self.conn
        try:
            conn.bio_write(data)
        except SSL.Error as exc:
            self._fail(exc)
            return
        if not self.handshake_done:
            self._handshake()
            if not self.handshake_done or self.disconnecting:
                return
        if not self.read_closed:
            self._read()

    def readConnectionLost(self) -> None:
        """The peer's TCP FIN."""
        if not self.handshake_done:
            self._fail(None)  # the handshake cannot complete
        elif not self.read_closed:
            self._peer_closed()  # a FIN without close_notify: end of data all the same

    def writeConnectionLost(self) -> None:
        """Our TCP FIN went out (after :meth:`half_close`)."""
        if self.half_closeable:
            self.wrappedProtocol.writeConnectionLost()

    def connectionLost(self, reason: Failure) -> None:
        if self.lost:
            return
        self.lost = True
        self.connected = 0
        if self.reason is not None:
            reason = self.reason
        elif not self.handshake_done:
            reason = self._handshake_error(reason)
        self.wrappedProtocol.connectionLost(reason)

    # -- as the protocol's transport ----------------------------------------

    def write(self, data: bytes) -> None:
        if self.write_closed or self.disconnecting or self.lost or not data:
            return
        if not self.handshake_done:
            if self.pending is None:
                self.pending = []
            self.pending.append(data)
            return
        send = self.conn.send
        try:
            sent = send(data)
            if sent < len(data):
                # pyOpenSSL contexts allow partial writes: one record per call
                view = memoryview(data)
                while sent < len(data):
                    sent += send(view[sent:])
        except SSL.Error as exc:
            self._fail(exc)
            return
        self._flush()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """close_notify after what is queued, then close (no wait for the peer's)."""
        if self.disconnecting or self.lost:
            return
        self.disconnecting = True
        if self.handshake_done and not self.write_closed:
            self.write_closed = True
            self._shutdown()
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.transport.abortConnection()

    def half_close(self) -> None:
        """
        Our side is done writing: close_notify after what is queued, then the
        TCP FIN; reading goes on. Before the handshake completed: close.
        """
        if self.write_closed or self.disconnecting or self.lost:
            return
        if not self.handshake_done or self.pending:
            self.loseConnection()
            return
        self.write_closed = True
        self._shutdown()
        self.transport.loseWriteConnection()

    loseWriteConnection = half_close

    def release(self) -> None:
        """Unregister the producer and close, unless already closing."""
        if self.lost or self.disconnecting:
            return
        self.transport.unregisterProducer()
        self.loseConnection()

    def getHandle(self) -> Any:  # noqa: N802
        """The pyOpenSSL connection (version, cipher, peer certificate)."""
        return self.conn

    def peer_ended(self) -> bool:
        """
        Right after the handshake: has the peer already ended its side with
        nothing sent? Its close_notify came with its Finished or is waiting
        on the socket, or a FIN or reset is. Application data first, or
        nothing yet, is False. What waiting bytes there are move from the
        socket into the BIO (one read; the layer's next ``_read`` decrypts
        them); nothing is decrypted here.
        """
        ended = self._peek()
        if ended is not None:
            return ended
        sock = getattr(self.transport, "socket", None)
        if sock is None:
            return False
        try:
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            return False  # nothing yet: the usual case
        except OSError:
            return True  # reset
        if not data:
            return True  # the FIN
        self.conn.bio_write(data)
        return bool(self._peek())

    def _peek(self) -> Optional[bool]:
        """What the BIO holds: close_notify True, data False, nothing (or part of a record) None."""
        try:
            self.conn.recv(1, socket.MSG_PEEK)
            return False  # application data
        except SSL.WantReadError:
            return None
        except SSL.ZeroReturnError:
            return True  # close_notify
        except SSL.Error:
            return False  # a bad record: the read that follows fails it

    def getPeer(self) -> Any:
        return self.transport.getPeer()

    def getHost(self) -> Any:
        return self.transport.getHost()

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.transport.setTcpNoDelay(enabled)

    # -- IConsumer / IPushProducer: the socket transport's flow control --------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- internals -----------------------------------------------------------

    def _handshake(self) -> None:
        conn = self.conn
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        except SSL.Error as exc:
            self._fail(exc)
            return
        self.handshake_done = True
        self._flush()  # the server's session tickets; the client's Finished
        if self.listener:
            self.wrappedProtocol.handshakeCompleted()
        pending, self.pending = self.pending, None
        if pending and not self.disconnecting:
            self.write(b"".join(pending))

    def _read(self) -> None:
        """Decrypt what the BIO holds; one ``dataReceived`` for all of it."""
        recv = self.conn.recv
        chunks: list[bytes] = []
        closed = False
        try:
            while True:
                chunks.append(recv(RECV_SIZE))
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            closed = True
        except SSL.Error as exc:
            self._fail(exc)
            return
        if chunks:
            self.wrappedProtocol.dataReceived(chunks[0] if len(chunks) == 1
                                              else b"".join(chunks))
        if self.lost:
            return
        self._flush()  # post-handshake answers (KeyUpdate)
        if closed and not self.read_closed:
            self._peer_closed()

    def _peer_closed(self) -> None:
        self.read_closed = True
        if self.half_closeable:
            self.wrappedProtocol.readConnectionLost()
        else:
            self.loseConnection()

    def _flush(self) -> None:
        """Hand what OpenSSL wrote to the outgoing BIO to the socket transport."""
        read = self.conn.bio_read
        try:
            data = read(FLUSH_SIZE)
        except SSL.WantReadError:
            return
        if len(data) == FLUSH_SIZE:
            chunks = [data]
            try:
                while True:
                    data = read(FLUSH_SIZE)
                    chunks.append(data)
                    if len(data) < FLUSH_SIZE:
                        break
            except SSL.WantReadError:
                pass
            data = b"".join(chunks)
        if not self.lost:
            self.transport.write(data)

    def _shutdown(self) -> None:
        try:
            self.conn.shutdown()
        except SSL.Error:
            pass
        self._flush()

    def _handshake_error(self, reason: Failure) -> Failure:
        """Why a handshake that did not complete failed (OpenSSL's words, as Twisted's)."""
        conn = self.conn
        try:
            conn.bio_shutdown()
            conn.do_handshake()
        except SSL.WantReadError:
            return reason
        except SSL.Error as exc:
            return Failure(exc)
        return reason

    def _fail(self, exc: Optional[SSL.Error]) -> None:
        """A TLS error (or EOF during the handshake): send the alert, close."""
        if self.reason is None:
            self.reason = (Failure(exc) if exc is not None else
                           self._handshake_error(Failure(ConnectionError("connection closed "
                                                                         "during handshake"))))
        self._flush()
        self.disconnecting = True
        self.write_closed = True
        self.transport.loseConnection()


def lean_wrap(transport: Any, creator: Any, client: bool, protocol: Any) -> TlsLayer:
    """
    Put a :class:`TlsLayer` between ``transport`` (connected to ``protocol``)
    and ``protocol``; it is now ``protocol.transport``. ``creator`` is the
    ``IOpenSSL{Server,Client}ConnectionCreator`` of the server or cluster.
    """
    layer = TlsLayer(protocol)
    if client:
        conn = creator.clientConnectionForTLS(layer)
        conn.set_connect_state()
    else:
        conn = creator.serverConnectionForTLS(layer)
        conn.set_accept_state()
    layer.conn = conn
    transport.protocol = layer
    if hasattr(transport, "half_close"):
        transport.half_close = True  # the lean transport: FINs come to readConnectionLost
    layer.makeConnection(transport)
    protocol.transport = layer
    if client:
        layer.start_client()
    return layer
