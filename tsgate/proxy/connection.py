"""
One proxied connection: the downstream (client) protocol and its upstream.

Life of a connection::

    accept ─► listener.inspect? ──no──► connect upstream at once, client reads paused
                  │ yes                   (a server-first banner reaches the client
                  ▼                        without waiting for client bytes)
             peek first bytes: TLS hint parser ─► SNI ─► chain
                  │ not TLS: STARTTLS negotiators (answer the client, keep peeking)
                  │ timeout / not TLS / no match ─► TCP fallback route, or close (NR)
                  ▼
             connect upstream (timeout; failure ─► UF), [STARTTLS exchange upstream],
             replay the peeked bytes unchanged, then relay:
             each transport is the other's streaming producer, half-close forwarded,
             idle timeout, byte counts; access log line at close.

Per-chunk work in the relay is one write, one addition and one clock read
per direction: ``dataReceived`` is swapped for a lean method once relaying.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet import error as ierror
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tsgate.accesslog import AccessRecord
from tsgate.explain import short_trace
from tsgate.interfaces import (
    Hint,
    HintParseError,
    HintTooLarge,
    ITimedStreamObserverFactory,
    NeedMore,
    Preamble,
)
from tsgate.proxy.context import ListenerRuntime, ProxyContext
from tsgate.routing import Cluster, Decision, Endpoint, Listener, Route

log = Logger(namespace="tsgate.proxy")

INSPECTING = "inspecting"
CONNECTING = "connecting"
NEGOTIATING = "negotiating"
RELAYING = "relaying"
CLOSED = "closed"


def format_address(addr: Any) -> str:
    host = getattr(addr, "host", None)
    if host is None:
        return str(getattr(addr, "name", "-") or "-")
    if ":" in host:
        return f"[{host}]:{addr.port}"
    return f"{host}:{addr.port}"


#: Buckets for observers' request latencies, in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


class WriteThrough:
    """
    A ``write`` for one relayed direction that sends at once when nothing is
    queued, instead of queueing every chunk for a later reactor turn.

    Twisted's ``write`` only buffers and asks epoll for writability: each
    relayed chunk then costs another reactor turn, a buffer join and two
    ``epoll_ctl`` calls. Sending right away when the transport's buffer is
    empty (what every event-loop proxy does) measured 3.5x the bulk rate and
    15-20 µs less latency per hop (bench/results/notes-2026-11-25.md).
    Whatever the socket does not take goes through Twisted's ``write``, which
    keeps the order, the high-water pause of the other side and the close
    handling. A slotted object rather than a closure: one per direction of
    every idle connection, so its size counts.
    """

    __slots__ = ("transport", "socket")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.socket = transport.socket

    def __call__(self, data: bytes) -> None:
        transport = self.transport
        if (
            not transport._tempDataBuffer
            and transport.offset == len(transport.dataBuffer)
            and transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnecting
            and not transport._writeDisconnected
        ):
            try:
                sent = self.socket.send(data)
            except OSError:  # EAGAIN, or an error Twisted's own path will report
                sent = 0
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
        transport.write(data)


def write_through(transport: Any) -> Callable[[bytes], None]:
    """The fastest correct ``write`` for a relayed transport (see WriteThrough)."""
    if getattr(transport, "socket", None) is None or not hasattr(transport, "_tempDataBuffer"):
        return transport.write  # type: ignore[no-any-return]  # not a plain TCP socket
    return WriteThrough(transport)


def _emitter(stats: Any, protocol: str, listener: str) -> Any:
    """An observer's ``emit``: counters named ``<protocol>.<name>`` per listener."""

    def emit(name: str, amount: int = 1) -> None:
        stats.inc(f"{protocol}.{name}", amount, listener=listener)

    return emit


def _observer(stats: Any, protocol: str, listener: str) -> Any:
    """A timed observer's ``observe``: histograms ``<protocol>.<name>`` per listener."""

    def observe(name: str, value: float) -> None:
        stats.observe(f"{protocol}.{name}", value, LATENCY_BUCKETS, listener=listener)

    return observe


@implementer(IHalfCloseableProtocol)
class DownstreamProtocol(Protocol):
    """The client side of one proxied connection; owns the connection's state."""

    # Slots: an idle gateway holds thousands of these, and a per-instance dict
    # of this many keys costs about 1.5 KiB each (Python shares dict keys only
    # up to 30 attributes). ``dataReceived`` is a slot so that relaying can
    # swap in a lean method per connection.
    __slots__ = (
        "ctx", "listener", "runtime", "state", "buffer", "bytes_received", "bytes_sent",
        "reported_received", "reported_sent", "client_eof", "upstream_eof", "observers",
        "last_activity", "termination", "started", "record", "decision", "route", "cluster",
        "endpoint", "upstream", "preamble", "hint", "idle_timeout", "_inspect_timer",
        "_connect_timer", "_idle_timer", "_duration_timer", "_connector", "_counted_active",
        "_now", "_up_write", "_down_write", "dataReceived", "transport", "connected", "factory",
    )

    #: a TCP transport (ITCPTransport + IProducer + IConsumer + half-close)
    transport: Any

    def __init__(self, ctx: ProxyContext, listener: Listener,
                 runtime: Optional[ListenerRuntime] = None) -> None:
        self.transport = None
        self.connected = 0
        self.factory = None
        self.dataReceived = self._inspect_data  # type: ignore[method-assign]
        self.upstream: Optional[UpstreamProtocol] = None
        self.route: Optional[Route] = None
        self.cluster: Optional[Cluster] = None
        self.endpoint: Optional[Endpoint] = None
        self.preamble: Optional[Preamble] = None
        self.hint: Optional[Hint] = None
        self.decision: Optional[Decision] = None
        self._inspect_timer: Any = None
        self._connect_timer: Any = None
        self._idle_timer: Any = None
        self._duration_timer: Any = None
        self._connector: Any = None
        self._counted_active = False
        self.idle_timeout = 0.0
        self.ctx = ctx
        #: the listener (and so the route table) in force when the connection
        #: arrived; a reload never changes where an accepted connection goes
        self.listener = listener
        self.runtime = runtime if runtime is not None else ctx.runtime(listener)
        self.state = INSPECTING
        self.buffer = b""  # peeked client bytes, replayed upstream unchanged
        self.bytes_received = 0  # from the client
        self.bytes_sent = 0  # to the client
        self.reported_received = 0  # already added to the byte counters
        self.reported_sent = 0
        self.client_eof = False
        self.upstream_eof = False
        self.observers: list[Any] = []
        self.last_activity = 0.0
        self.termination = "-"

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
            local, remote = format_address(transport.getHost()), format_address(transport.getPeer())
        else:  # nothing reads them: skip the formatting (admin asks the transport)
            local = remote = "-"
        self.record = AccessRecord(
            start_time=now, downstream_local_address=local, downstream_remote_address=remote
        )
        ctx.connections.add(self)
        key = self.runtime.stats_key
        ctx.stats.inc_key("listener.downstream_cx_total", key)
        ctx.stats.gauge_add_key("listener.downstream_cx_active", key, 1)
        if self.listener.inspect:
            self._inspect_timer = ctx.timers.schedule(
                self.runtime.inspect_timeout, self._inspection_timed_out
            )
        else:
            transport.pauseProducing()
            self._route(Decision(self.listener.tcp_route, "tcp", "TCP route"))

    # -- inspection ------------------------------------------------------

    def _inspect_data(self, data: bytes) -> None:
        """Before relaying: buffer and inspect. (``dataReceived`` until relaying.)"""
        self.buffer += data
        if self.state is INSPECTING:
            self._inspect()

    def _inspect(self) -> None:
        """
        Offer the peeked bytes to each inspector in order (TLS first, then
        STARTTLS negotiators, then other hint parsers) until one decides.
        """
        ctx = self.ctx
        data = self.buffer
        undecided = False
        for inspector in ctx.inspectors:
            try:
                result = inspector.parse(data)
            except HintParseError as exc:
                self._count_hello_error(inspector, exc)
                continue
            except Exception:
                name = getattr(inspector, "name", "?")
                ctx.stats.inc("plugin.crashed", plugin=name)
                log.failure("inspector {name} crashed", name=name)
                continue
            if isinstance(result, Hint):
                self._hinted(result)
                return
            if isinstance(result, Preamble):
                if self.preamble is None:
                    self._negotiated(result)
                    return
                continue  # a second STARTTLS request: not honoured
            if isinstance(result, NeedMore):
                undecided = True
        if undecided and len(data) < ctx.settings.max_inspect_bytes:
            return
        if undecided:
            ctx.stats.inc("tls_inspector.client_hello_too_large", listener=self.listener.name)
        else:
            ctx.stats.inc("tls_inspector.tls_not_found", listener=self.listener.name)
        self._decide(None)

    def _count_hello_error(self, parser: Any, exc: Exception) -> None:
        name = "client_hello_too_large" if isinstance(exc, HintTooLarge) else "parse_error"
        if getattr(parser, "protocol", "") == "tls":
            self.ctx.stats.inc(f"tls_inspector.{name}", listener=self.listener.name)
        else:
            self.ctx.stats.inc(f"{parser.protocol}.{name}", listener=self.listener.name)

    def _negotiated(self, pre: Preamble) -> None:
        """A STARTTLS preamble: answer the client, drop it, peek at what follows."""
        self.preamble = pre
        self.ctx.stats.inc(f"{pre.protocol}.starttls", listener=self.listener.name)
        self.buffer = self.buffer[pre.length:]
        self.transport.write(pre.client_reply)
        if self.buffer:
            self._inspect()

    def _hinted(self, hint: Hint) -> None:
        self.hint = hint
        stats, key = self.ctx.stats, self.runtime.stats_key
        if hint.protocol == "tls":
            stats.inc_key("tls_inspector.tls_found", key)
            stats.inc_key(
                "tls_inspector.sni_found" if hint.sni else "tls_inspector.sni_not_found", key
            )
            if "alpn" in hint.attributes:
                stats.inc_key("tls_inspector.alpn_found", key)
        self._decide(hint.sni)

    def _inspection_timed_out(self) -> None:
        self._inspect_timer = None
        if self.state is not INSPECTING:
            return
        self.ctx.stats.inc("listener.downstream_pre_cx_timeout", listener=self.listener.name)
        self.ctx.stats.inc("tls_inspector.read_timeout", listener=self.listener.name)
        self._decide(None, timed_out=True)

    def _decide(self, sni: Optional[str], timed_out: bool = False) -> None:
        if self._inspect_timer is not None:
            self._inspect_timer.cancel()
            self._inspect_timer = None
        if sni:
            self.record.requested_server_name = sni
        self.transport.pauseProducing()
        decision = self.listener.route_for_sni(sni)
        if timed_out and decision.route is None:
            # Counted as downstream_pre_cx_timeout already, not as a chain miss.
            self.termination = "inspection timed out"
            self._no_route(decision)
            return
        self._route(decision)

    def _no_route(self, decision: Decision) -> None:
        """No chain for this connection: close it at once, logged ``NR``."""
        self.record.route_name = short_trace(decision)
        self.record.response_flags = "NR"
        self.record.response_code_details = "filter_chain_not_found"
        self._abort()

    # -- routing and connecting -------------------------------------------

    def _route(self, decision: Decision) -> None:
        ctx = self.ctx
        self.decision = decision
        if decision.route is None:
            ctx.stats.inc("listener.no_filter_chain_match", listener=self.listener.name)
            self._no_route(decision)
            return
        # The decision trace in short (the same token `tsgate explain` prints).
        self.record.route_name = short_trace(decision)
        route = self.route = decision.route
        cluster = self.cluster = ctx.balancer.pick_cluster(route)
        self.record.upstream_cluster = cluster.name
        endpoint = self.endpoint = ctx.balancer.pick_endpoint(cluster)
        if endpoint is None:
            if cluster.missing:
                # Envoy's tcp_proxy when the route's cluster does not exist: NC.
                self._cluster_not_found(route, cluster)
                return
            ctx.stats.inc("cluster.upstream_cx_none_healthy", cluster=cluster.name)
            self.record.response_flags = "UH"
            self._abort()
            return
        state = ctx.balancer.state(cluster)
        if cluster.max_connections is not None and state.active >= cluster.max_connections:
            ctx.stats.inc("cluster.upstream_cx_overflow", cluster=cluster.name)
            self.record.response_flags = "UO"
            self._abort()
            return
        self.state = CONNECTING
        self.record.upstream_host = f"{endpoint.address}:{endpoint.port}"
        timeout = ctx.settings.connect_timeout or cluster.connect_timeout
        ctx.stats.inc_key("cluster.upstream_cx_total", state.cluster_key)
        state.active += 1
        state.total += 1
        ctx.stats.gauge_add_key("cluster.upstream_cx_active", state.cluster_key, 1)
        self._counted_active = True
        # The connect timeout is our own timer on the injected clock (not
        # connectTCP's), so it is testable and counted like Envoy's.
        self._connect_timer = ctx.timers.schedule(timeout, self._connect_timed_out)
        self._connector = ctx.reactor.connectTCP(
            endpoint.address, endpoint.port, _UpstreamFactory(self), timeout=None
        )

    def _cluster_not_found(self, route: Route, cluster: Cluster) -> None:
        """
        The route names a cluster that does not exist (settled at config
        time, ``Cluster.missing``): closed at once, flagged ``NC``, counted as
        Envoy (``tcp.downstream_cx_no_route``) and Istio count it.
        """
        ctx = self.ctx
        ctx.stats.inc("tcp.downstream_cx_no_route", route=route.name)
        self.record.response_flags = "NC"
        self.record.response_code_details = "cluster_not_found"
        state = ctx.balancer.state(cluster)
        ctx.stats.inc_key("istio_tcp_connections_opened_total", state.metric_key())
        ctx.stats.inc_key("istio_tcp_connections_closed_total", state.metric_key("NC"))
        self._abort()

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        if self._connector is not None and self.state is CONNECTING:
            connector, self._connector = self._connector, None
            connector.stopConnecting()
            self.upstream_failed(Failure(ierror.TimeoutError("connect timeout")))

    def upstream_failed(self, reason: Failure) -> None:
        """The connect attempt failed or timed out: close the client, flag UF."""
        self._connector = None
        self._cancel_timer("_connect_timer")
        if self.state is CLOSED:
            return
        ctx, cluster = self.ctx, self.cluster
        assert cluster is not None
        if reason.check(ierror.TimeoutError):
            ctx.stats.inc("cluster.upstream_cx_connect_timeout", cluster=cluster.name)
            detail = "connect timeout"
        elif reason.check(ierror.DNSLookupError):
            detail = "dns resolution failed"
        else:
            detail = reason.getErrorMessage()
        ctx.stats.inc("cluster.upstream_cx_connect_fail", cluster=cluster.name)
        self.record.response_flags = "DF" if reason.check(ierror.DNSLookupError) else "UF"
        # One token, as Envoy renders it (log parsers split on spaces).
        self.record.upstream_transport_failure_reason = "_".join(detail.replace('"', "'").split())
        message = f"{cluster.name} {self.record.upstream_host}: {detail}"
        ctx.balancer.state(cluster).recent_errors.append((ctx.reactor.seconds(), message))
        ctx.error(message)
        self._abort()

    def upstream_connected(self, upstream: UpstreamProtocol) -> None:
        self._connector = None
        self._cancel_timer("_connect_timer")
        if self.state is CLOSED:
            upstream.transport.loseConnection()
            return
        self.upstream = upstream
        transport = upstream.transport
        try:
            transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        transport.bufferSize = self.ctx.settings.read_size
        if self.ctx.access_log.wanted:
            self.record.upstream_local_address = format_address(transport.getHost())
        cluster = self.cluster
        assert cluster is not None
        self.ctx.stats.inc_key(
            "istio_tcp_connections_opened_total", self.ctx.balancer.state(cluster).metric_key()
        )
        if self.preamble is not None:
            self.state = NEGOTIATING
            transport.write(self.preamble.upstream_request)
            return
        self._start_relay()

    def upstream_negotiation(self, data: bytes) -> None:
        """Bytes from the upstream during a STARTTLS exchange."""
        pre = self.preamble
        assert pre is not None and self.upstream is not None
        self.upstream.reply += data
        reply = self.upstream.reply
        want = pre.upstream_reply
        if len(reply) < len(want) and want.startswith(reply):
            return
        if reply[: len(want)] != want:
            self.ctx.stats.inc(f"{pre.protocol}.upstream_refused", listener=self.listener.name)
            self.termination = f"upstream refused {pre.protocol} TLS ({reply[:8]!r})"
            self.record.connection_termination_details = f"{pre.protocol}_upstream_refused_tls"
            self.ctx.error(f"{self.record.upstream_host}: {self.termination}")
            self._abort()
            return
        extra = reply[len(want):]
        self._start_relay()
        if extra:
            self.upstream.dataReceived(extra)

    def _start_relay(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        self.state = RELAYING
        route = self.route
        assert route is not None
        ctx = self.ctx
        for factory in self.runtime.observers:
            emit = _emitter(ctx.stats, factory.protocol, self.listener.name)
            try:
                if ITimedStreamObserverFactory.providedBy(factory):
                    observe = _observer(ctx.stats, factory.protocol, self.listener.name)
                    observer = factory.new_timed_observer(emit, observe, ctx.reactor.seconds)
                else:
                    observer = factory.new_observer(emit)
                self.observers.append(observer)
            except Exception:
                ctx.stats.inc(f"{factory.protocol}.observer_crashed", listener=self.listener.name)
        down_t, up_t = self.transport, upstream.transport
        # Each side is the other's streaming producer: a full write buffer on
        # one side pauses reading on the other (bounded memory both ways).
        down_t.registerProducer(up_t, True)
        up_t.registerProducer(down_t, True)
        self._now = ctx.reactor.seconds
        self.last_activity = self._now()
        self._up_write = write_through(up_t)
        self._down_write = write_through(down_t)
        if self.observers:
            self.dataReceived = self._relay_observed_client  # type: ignore[method-assign]
            upstream.dataReceived = upstream._relay_observed  # type: ignore[method-assign]
        else:
            self.dataReceived = self._relay_client  # type: ignore[method-assign]
            upstream.dataReceived = upstream._relay  # type: ignore[method-assign]
        idle = ctx.settings.idle_timeout
        if idle is None:
            idle = route.idle_timeout
        self.idle_timeout = idle
        if idle:
            self._idle_timer = ctx.timers.schedule(idle, self._idle_check)
        if route.max_connection_duration:
            self._duration_timer = ctx.timers.schedule(
                route.max_connection_duration - (self._now() - self.started),
                self._duration_exceeded,
            )
        if self.buffer:
            data, self.buffer = self.buffer, b""
            self.dataReceived(data)
        if self.client_eof:
            self._forward_eof_upstream()
        else:
            down_t.resumeProducing()

    # -- relay -----------------------------------------------------------

    def _relay_client(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self.last_activity = self._now()
        self._up_write(data)

    def _relay_observed_client(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self.last_activity = self._now()
        self._up_write(data)
        self._observe("client_data", data)

    def _observe(self, method: str, data: bytes) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, method)(data)
            except Exception:
                self.observers.remove(observer)
                self.ctx.stats.inc("plugin.observer_crashed", listener=self.listener.name)
                log.failure("stream observer crashed; dropped for this connection")

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.state is CLOSED:
            return
        idle_for = self._now() - self.last_activity
        if idle_for < self.idle_timeout:
            self._idle_timer = self.ctx.timers.schedule(
                self.idle_timeout - idle_for, self._idle_check
            )
            return
        assert self.route is not None
        self.ctx.stats.inc("tcp.idle_timeout", route=self.route.name)
        self.termination = "idle timeout"
        self.record.connection_termination_details = "tcp_session_idle_timeout"
        self._abort()

    def _duration_exceeded(self) -> None:
        self._duration_timer = None
        if self.state is CLOSED:
            return
        assert self.route is not None
        self.ctx.stats.inc("tcp.max_downstream_connection_duration", route=self.route.name)
        self.record.response_flags = "DT"
        self._abort()

    # -- half-close and close ----------------------------------------------

    def readConnectionLost(self) -> None:
        """The client shut its write side (FIN)."""
        self.client_eof = True
        if self.state is INSPECTING:
            # Closed or half-closed before its hello was complete: no upstream.
            self.ctx.stats.inc("tls_inspector.connection_closed", listener=self.listener.name)
            self.termination = "client closed during inspection"
            self._abort()
        elif self.state is RELAYING:
            self._forward_eof_upstream()
        # CONNECTING / NEGOTIATING: forwarded once the relay starts.

    def _forward_eof_upstream(self) -> None:
        assert self.upstream is not None
        self._forward_eof(self.upstream.transport, self.upstream_eof)

    def upstream_read_lost(self) -> None:
        """The upstream shut its write side: forward the FIN to the client."""
        self.upstream_eof = True
        if self.state is NEGOTIATING:
            self.termination = "upstream closed during STARTTLS"
            self._abort()
            return
        self._forward_eof(self.transport, self.client_eof)

    def _forward_eof(self, transport: Any, other_direction_done: bool) -> None:
        """
        Shut ``transport``'s write side once its buffer is flushed (a FIN for
        a FIN); when both directions have ended, close both sockets.
        """
        if not transport.connected:
            return
        # A registered producer would stop a paused transport from finishing
        # its shutdown (Twisted resumes the producer instead); the side that
        # sent the FIN has nothing more to produce anyway.
        transport.unregisterProducer()
        transport.loseWriteConnection()
        if other_direction_done:
            self._finish()

    def writeConnectionLost(self) -> None:
        """Our FIN to the client went out (buffer flushed)."""

    def _finish(self) -> None:
        """Both directions are done: close both sockets (writes already flushed)."""
        self.transport.loseConnection()
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def _abort(self) -> None:
        """Close the client now (nothing of ours is left to flush to it)."""
        if self._connector is not None:
            connector, self._connector = self._connector, None
            connector.stopConnecting()
        self.transport.loseConnection()
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def close_gracefully(self, why: str) -> None:
        """Close both sides after flushing what is buffered (drain, shutdown)."""
        self.termination = why
        self.record.connection_termination_details = why
        for protocol in (self, self.upstream):
            if protocol is not None and protocol.transport is not None:
                protocol.transport.unregisterProducer()
                protocol.transport.loseConnection()

    def upstream_lost(self, reason: Failure) -> None:
        """The upstream connection is fully gone."""
        if self.state is CLOSED:
            return
        if self.state is NEGOTIATING:
            self.termination = "upstream closed during STARTTLS"
        # Close the client after flushing what the upstream sent.
        transport = self.transport
        transport.unregisterProducer()
        transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        ctx = self.ctx
        previous, self.state = self.state, CLOSED
        for name in ("_inspect_timer", "_connect_timer", "_idle_timer", "_duration_timer"):
            self._cancel_timer(name)
        if self._connector is not None:
            connector, self._connector = self._connector, None
            connector.stopConnecting()
        if self.upstream is not None:
            up_t = self.upstream.transport
            up_t.unregisterProducer()
            up_t.loseConnection()
        ctx.connections.discard(self)
        key = self.runtime.stats_key
        ctx.stats.gauge_add_key("listener.downstream_cx_active", key, -1)
        now = ctx.reactor.seconds()
        duration = now - self.started
        ctx.stats.observe_key("listener.downstream_cx_length_seconds", key, duration)
        record = self.record
        record.bytes_received = self.bytes_received
        record.bytes_sent = self.bytes_sent
        record.duration_ms = int(duration * 1000)
        if ctx.access_log.wanted:
            record.hints = self._hints()
        cluster = self.cluster
        if self._counted_active and cluster is not None:
            state = ctx.balancer.state(cluster)
            state.active -= 1
            ctx.stats.gauge_add_key("cluster.upstream_cx_active", state.cluster_key, -1)
            if previous in (RELAYING, NEGOTIATING) or self.upstream is not None:
                self.flush_byte_counters()
                ctx.stats.inc_key(
                    "istio_tcp_connections_closed_total", state.metric_key(record.response_flags)
                )
        ctx.access_log.emit(record)

    def _hints(self) -> Optional[dict[str, str]]:
        """What the hint parser, STARTTLS and observers learned, for the access log."""
        attributes: dict[str, Any] = {}
        if self.hint is not None:
            attributes.update(self.hint.attributes)
            attributes["protocol"] = self.hint.protocol
        if self.preamble is not None:
            attributes.update(self.preamble.attributes)
            attributes["starttls"] = self.preamble.protocol
        for observer in self.observers:
            try:
                attributes.update(observer.attributes())
            except Exception:
                pass
        attributes.pop("sni", None)  # already %REQUESTED_SERVER_NAME%
        return {k: str(v) for k, v in attributes.items() if v not in (None, "")} or None

    def _cancel_timer(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None and timer.active():
            timer.cancel()
        setattr(self, name, None)

    def flush_byte_counters(self) -> None:
        """Add the bytes moved since the last flush to Istio's byte counters."""
        cluster = self.cluster
        if cluster is None:
            return
        received = self.bytes_received - self.reported_received
        sent = self.bytes_sent - self.reported_sent
        if not (received or sent):
            return
        key = self.ctx.balancer.state(cluster).metric_key()
        stats = self.ctx.stats
        stats.inc_key("istio_tcp_received_bytes_total", key, received)
        stats.inc_key("istio_tcp_sent_bytes_total", key, sent)
        self.reported_received = self.bytes_received
        self.reported_sent = self.bytes_sent


@implementer(IHalfCloseableProtocol)
class UpstreamProtocol(Protocol):
    """The upstream side; everything is decided by its DownstreamProtocol."""

    __slots__ = ("downstream", "reply", "dataReceived", "transport", "connected")

    transport: Any

    def __init__(self, downstream: DownstreamProtocol) -> None:
        self.transport = None
        self.connected = 0
        self.dataReceived = self._before_relay  # type: ignore[method-assign]
        self.downstream = downstream
        self.reply = b""

    def connectionMade(self) -> None:
        self.downstream.upstream_connected(self)

    def _before_relay(self, data: bytes) -> None:
        """Before relaying: only a STARTTLS reply is expected. (``dataReceived``.)"""
        down = self.downstream
        if down.state is NEGOTIATING:
            down.upstream_negotiation(data)
        elif down.state is RELAYING:  # replayed extra bytes
            self._relay(data)

    def _relay(self, data: bytes) -> None:
        down = self.downstream
        down.bytes_sent += len(data)
        down.last_activity = down._now()
        down._down_write(data)

    def _relay_observed(self, data: bytes) -> None:
        down = self.downstream
        down.bytes_sent += len(data)
        down.last_activity = down._now()
        down._down_write(data)
        down._observe("server_data", data)

    def readConnectionLost(self) -> None:
        self.downstream.upstream_read_lost()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.downstream.upstream_lost(reason)


class _UpstreamFactory(ClientFactory):
    """One connect attempt for one downstream connection."""

    #: no "Starting factory" / "Stopping factory" log events: two per
    #: connection cost a quarter of the gateway's time per connection
    noisy = False

    def __init__(self, downstream: DownstreamProtocol) -> None:
        self.downstream = downstream

    def buildProtocol(self, addr: Any) -> UpstreamProtocol:
        return UpstreamProtocol(self.downstream)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not reason.check(ierror.UserError):  # our own stopConnecting()
            self.downstream.upstream_failed(reason)
