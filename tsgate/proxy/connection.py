"""
One proxied connection: the accept stage, and the protocol Twisted drives.

A connection runs the pipeline's stages in order (docs/design.md, "Stages";
each stage one module, each a class this one inherits)::

    accept (here) ─► listener stages (inspect) ─► decision (decide)
        ─► upstream connect (upstream) ─► relay (relay) ─► close record (record)

Accept counts the connection, and either reads first (listener stages, an
SNI inspection, under one deadline) or routes at once with client reads
paused (so a server-first banner reaches the client without waiting for
client bytes). Twisted calls the ``IProtocol`` and ``IHalfCloseableProtocol``
methods below; everything else is the stages'.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tsgate.accesslog import AccessRecord
from tsgate.proxy.context import ListenerRuntime, ProxyContext
from tsgate.proxy.inspect import InspectStage
from tsgate.proxy.relay import LATENCY_BUCKETS, write_through
from tsgate.proxy.state import (
    CLOSED,
    CONNECTING,
    INSPECTING,
    NEGOTIATING,
    RELAYING,
    format_address,
)
from tsgate.proxy.transport import LeanTransport
from tsgate.proxy.upstream import UpstreamFactory, UpstreamProtocol
from tsgate.routing import Listener
from tsgate.tls import stage as tls_stage

__all__ = [
    "CLOSED", "CONNECTING", "INSPECTING", "LATENCY_BUCKETS", "NEGOTIATING", "RELAYING",
    "DownstreamProtocol", "UpstreamFactory", "UpstreamProtocol", "format_address",
    "write_through",
]


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class DownstreamProtocol(InspectStage):
    """The client side of one proxied connection; owns the connection's state."""

    __slots__ = ()

    def __init__(self, ctx: ProxyContext, listener: Listener,
                 runtime: Optional[ListenerRuntime] = None) -> None:
        super().__init__(ctx, listener, runtime)
        self.dataReceived = self.read_first  # type: ignore[method-assign]

    # -- accept ----------------------------------------------------------

    def connectionMade(self) -> None:
        ctx = self.ctx
        transport = self.transport
        try:
            transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass  # unix sockets
        transport.bufferSize = ctx.settings.read_size
        now = ctx.reactor.seconds()
        self.started = now
        self.last_activity = now
        if ctx.access_log.wanted:
            # The local address while the socket is open; the client's at close
            # (a PROXY protocol header may change it before then).
            local = format_address(transport.getHost())
            remote = self.peer_address
        else:  # nothing reads them: skip the formatting (admin asks the connection)
            local = remote = "-"
        self.record = AccessRecord(
            start_time=now, downstream_local_address=local, downstream_remote_address=remote
        )
        ctx.connections.add(self)
        key = self.runtime.stats_key
        ctx.stats.inc_key("listener.downstream_cx_total", key)
        ctx.stats.gauge_add_key("listener.downstream_cx_active", key, 1)
        for check in self.runtime.accept_checks:
            ending = check(self)
            if ending is not None:
                self.end(ending)  # before any read or upstream connect
                return
        self.start_listener_stages()

    # -- the client's half-close and close ----------------------------------

    def readConnectionLost(self) -> None:
        """The client shut its write side (FIN)."""
        self.client_eof = True
        if self.state is INSPECTING:
            self.client_closed_early()
        elif self.state is RELAYING:
            self.forward_eof_upstream()
        # CONNECTING / NEGOTIATING: forwarded once the relay starts.

    def writeConnectionLost(self) -> None:
        """Our FIN to the client went out (buffer flushed)."""

    def handshakeCompleted(self) -> None:  # noqa: N802 (IHandshakeListener)
        """The client's TLS handshake (termination) completed: decide and connect."""
        tls_stage.handshake_completed(self)

    def close_gracefully(self, why: str) -> None:
        """Close both sides after flushing what is buffered (drain, shutdown)."""
        self.termination = why
        self.record.connection_termination_details = why
        for protocol in (self, self.upstream):
            if protocol is not None and protocol.transport is not None:
                tls_stage.release(protocol.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.tls is not None and not self.tls.done:
            tls_stage.termination_lost(self, reason)
        previous, self.state = self.state, CLOSED
        self.cancel_timers()
        if self.connector is not None:
            connector, self.connector = self.connector, None
            connector.stopConnecting()
        if self.upstream is not None:
            transport = self.upstream.transport
            if type(transport) is LeanTransport:  # not a TLS layer: release it plainly
                transport.unregisterProducer()
                transport.loseConnection()
            else:
                tls_stage.release(transport)
        self.write_close_record(previous)
