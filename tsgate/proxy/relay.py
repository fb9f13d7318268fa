"""
The relay stage: bytes both ways until both sides are done.

Each transport is the other's streaming producer (a full write buffer on one
side pauses reading on the other: bounded memory both ways), a FIN is
forwarded as a FIN once the buffer is flushed (half-close), the idle timeout
and the maximum connection duration end the connection, and the listener's
stream observers see the bytes when it has any.

Per-chunk work is one write, one addition and one clock read per direction:
``dataReceived`` of both protocols is swapped for a lean bound method of the
connection once relaying (the observed variant only when observers exist).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from tsgate.interfaces import ITimedStreamObserverFactory
from tsgate.proxy.record import CloseRecord
from tsgate.proxy.stages import Ending
from tsgate.proxy.state import CLOSED, NEGOTIATING, RELAYING
from tsgate.proxy.transport import LeanTransport
from tsgate.stats import Stats
from tsgate.tls import stage as tls_stage

log = Logger(namespace="tsgate.proxy")

#: Buckets for observers' request latencies, in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


def write_through(transport: Any) -> Callable[[bytes], None]:
    """
    The ``write`` the relay calls for a transport. A :class:`LeanTransport`
    sends at once when nothing is queued (every event-loop proxy does;
    Twisted's ``write`` queues each chunk for a later reactor turn, a buffer
    join and two ``epoll_ctl`` calls: bench/results/notes-2026-11-25.md) and
    is its own write function, so the relay keeps no bound method per
    connection. Other transports (unix sockets, systemd-handed listeners,
    reactors without ``IReactorFDSet``) get their own ``write``: nothing
    reads Twisted's private buffer fields.
    """
    if type(transport) is LeanTransport:
        return transport
    return transport.write  # type: ignore[no-any-return]


def _emitter(stats: Stats, protocol: str, listener: str) -> Any:
    """An observer's ``emit``: counters named ``<protocol>.<name>`` per listener."""

    def emit(name: str, amount: int = 1) -> None:
        stats.inc(f"{protocol}.{name}", amount, listener=listener)

    return emit


def _observer(stats: Stats, protocol: str, listener: str) -> Any:
    """A timed observer's ``observe``: histograms ``<protocol>.<name>`` per listener."""

    def observe(name: str, value: float) -> None:
        stats.observe(f"{protocol}.{name}", value, LATENCY_BUCKETS, listener=listener)

    return observe


class RelayStage(CloseRecord):
    """The relay stage (see the module docstring)."""

    __slots__ = ()

    def start_relay(self) -> None:
        """Entry: the upstream is connected (and negotiated): relay both ways."""
        upstream = self.upstream
        route = self.route
        assert upstream is not None and route is not None
        self.state = RELAYING
        ctx = self.ctx
        self._build_observers()
        down_t, up_t = self.transport, upstream.transport
        # Each side is the other's streaming producer: a full write buffer on
        # one side pauses reading on the other (bounded memory both ways).
        down_t.registerProducer(up_t, True)
        up_t.registerProducer(down_t, True)
        self.now = ctx.now  # one bound method for every connection
        self.last_activity = self.now()
        # write_through, inline: a lean transport is its own write function
        self.up_write = up_t if type(up_t) is LeanTransport else up_t.write
        self.down_write = down_t if type(down_t) is LeanTransport else down_t.write
        if self.observers:
            self.dataReceived = self.relay_client_observed  # type: ignore[method-assign]
            upstream.relay_to(self.relay_server_observed)
        else:
            self.dataReceived = self.relay_client  # type: ignore[method-assign]
            upstream.relay_to(self.relay_server)
        idle = ctx.settings.idle_timeout
        if idle is None:
            idle = route.idle_timeout
        self.idle_timeout = idle
        if idle:
            self.idle_timer = ctx.timers.schedule(idle, self._idle_check)
        if route.max_connection_duration:
            self.duration_timer = ctx.timers.schedule(
                route.max_connection_duration - (self.now() - self.started),
                self._duration_exceeded,
            )
        replayed = self.buffer
        if replayed:
            self.buffer = b""
            self.dataReceived(replayed)
        if self.client_eof:
            self.forward_eof_upstream()
        else:
            down_t.resumeProducing()
            if not replayed and type(down_t) is LeanTransport:
                # The client usually spoke while the upstream connected: read
                # now rather than after another reactor turn (a recv that finds
                # nothing costs less than the turn saves). A client whose first
                # flight was read already (a ClientHello) waits for an answer.
                down_t.read_now()

    def _build_observers(self) -> None:
        ctx = self.ctx
        name = self.listener.name
        observers: list[Any] = []
        for factory in self.runtime.observers:
            emit = _emitter(ctx.stats, factory.protocol, name)
            try:
                if ITimedStreamObserverFactory.providedBy(factory):
                    observe = _observer(ctx.stats, factory.protocol, name)
                    observer = factory.new_timed_observer(emit, observe, ctx.reactor.seconds)
                else:
                    observer = factory.new_observer(emit)
                observers.append(observer)
            except Exception:
                ctx.stats.inc(f"{factory.protocol}.observer_crashed", listener=name)
        if observers:
            self.observers = observers

    # -- the hot path ------------------------------------------------------

    def relay_client(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self.last_activity = self.now()
        self.up_write(data)

    def relay_server(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self.last_activity = self.now()
        self.down_write(data)

    def relay_client_observed(self, data: bytes) -> None:
        self.relay_client(data)
        self._observe("client_data", data)

    def relay_server_observed(self, data: bytes) -> None:
        self.relay_server(data)
        self._observe("server_data", data)

    def _observe(self, method: str, data: bytes) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, method)(data)
            except Exception:
                self.observers.remove(observer)
                self.ctx.stats.inc("plugin.observer_crashed", listener=self.listener.name)
                log.failure("stream observer crashed; dropped for this connection")

    # -- limits ------------------------------------------------------------

    def _idle_check(self) -> None:
        self.idle_timer = None
        if self.state is CLOSED:
            return
        idle_for = self.now() - self.last_activity
        if idle_for < self.idle_timeout:
            self.idle_timer = self.ctx.timers.schedule(
                self.idle_timeout - idle_for, self._idle_check
            )
            return
        assert self.route is not None
        self.end(Ending(termination="tcp_session_idle_timeout", why="idle timeout",
                        counter=("tcp.idle_timeout", Stats.label_key(route=self.route.name))))

    def _duration_exceeded(self) -> None:
        self.duration_timer = None
        if self.state is CLOSED:
            return
        assert self.route is not None
        self.end(Ending("DT", counter=("tcp.max_downstream_connection_duration",
                                       Stats.label_key(route=self.route.name))))

    # -- half-close ----------------------------------------------------------

    def forward_eof_upstream(self) -> None:
        assert self.upstream is not None
        self._forward_eof(self.upstream.transport, self.upstream_eof)

    def upstream_read_lost(self) -> None:
        """The upstream shut its write side: forward the FIN to the client."""
        self.upstream_eof = True
        if self.state is NEGOTIATING:
            self.termination = "upstream closed during STARTTLS"
            self.abort()
            return
        self._forward_eof(self.transport, self.client_eof)

    def _forward_eof(self, transport: Any, other_direction_done: bool) -> None:
        """
        Shut ``transport``'s write side once its buffer is flushed (a FIN for
        a FIN); when both directions have ended, close both sockets.
        """
        if not transport.connected:
            return
        if type(transport) is not LeanTransport and tls_stage.is_tls(transport):
            # close_notify, then the TCP FIN (tsgate.tls.stage)
            transport.unregisterProducer()
            tls_stage.half_close(transport)
            if other_direction_done:
                self.finish()
            return
        # A registered producer would stop a paused transport from finishing
        # its shutdown (Twisted resumes the producer instead); the side that
        # sent the FIN has nothing more to produce anyway.
        transport.unregisterProducer()
        transport.loseWriteConnection()
        if other_direction_done:
            self.finish()
