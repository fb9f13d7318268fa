"""
The upstream-connect stage: from a chosen route to a connected upstream.

The balancer picks the weighted cluster and the endpoint (none: ``UH``; the
cluster's connection limit reached: ``UO``), the connect runs under the
pipeline's own timeout on the injected clock (``UF`` on failure or timeout,
``DF`` when the name does not resolve), the features' upstream stages run on
the connected socket (next: the PROXY protocol header out), a STARTTLS
preamble is replayed to the upstream and its reply checked, then the relay
starts. How the socket is opened is ``ListenerRuntime.connect`` (next: TLS
origination).

:class:`UpstreamProtocol` is the upstream socket's protocol; it owns nothing
and tells its connection what happened through public methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet import error as ierror
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tsgate.proxy.relay import RelayStage
from tsgate.proxy.stages import Ending
from tsgate.proxy.state import CLOSED, CONNECTING, NEGOTIATING, RELAYING, format_address
from tsgate.stats import Stats
from tsgate.tls import stage as tls_stage

if TYPE_CHECKING:  # pragma: no cover
    from tsgate.routing import Route


def source_ip(conn: Any, cluster: Any) -> Optional[str]:
    """The client's IP when the cluster hashes on it (a PROXY header's source, if any)."""
    policy = cluster.policy
    if policy is None or not policy.hash_source_ip:
        return None
    return conn.remote_address.rpartition(":")[0].strip("[]") or None


class _Connecting:
    """The connector slot while ``connect`` runs (nothing to stop yet)."""

    def stopConnecting(self) -> None:
        pass


_CONNECTING = _Connecting()


class ConnectStage(RelayStage):
    """The upstream-connect stage (see the module docstring)."""

    __slots__ = ()

    def connect_upstream(self, route: Route) -> None:
        """Entry: the route is decided; pick, connect, then start the relay."""
        ctx = self.ctx
        balancer = ctx.balancer
        cluster = self.cluster = balancer.pick_cluster(route)
        state = self.cstate = balancer.state(cluster)
        self.record.upstream_cluster = cluster.name
        endpoint = self.endpoint = balancer.pick_endpoint(cluster, source_ip(self, cluster))
        if endpoint is None:
            if cluster.missing:
                # The route names a cluster that does not exist (settled at
                # config time): Envoy's tcp_proxy closes it at once, NC.
                self.end(Ending("NC", details="cluster_not_found",
                                counter=("tcp.downstream_cx_no_route",
                                         Stats.label_key(route=route.name))))
                return
            self.end(Ending("UH", counter=("cluster.upstream_cx_none_healthy",
                                           Stats.label_key(cluster=cluster.name))))
            return
        if cluster.max_connections is not None and state.active >= cluster.max_connections:
            self.end(Ending("UO", counter=("cluster.upstream_cx_overflow",
                                           Stats.label_key(cluster=cluster.name))))
            return
        self.state = CONNECTING
        ctx.stats.inc_key("cluster.upstream_cx_total", state.cluster_key)
        state.active += 1
        state.total += 1
        ctx.stats.gauge_add_key("cluster.upstream_cx_active", state.cluster_key, 1)
        self.counted_active = True
        self._connect(endpoint)

    def _connect(self, endpoint: Any) -> None:
        """One connect attempt (the host counts it as active until it fails or closes)."""
        ctx, cluster = self.ctx, self.cluster
        assert cluster is not None
        self.endpoint = endpoint
        self.tried.append(endpoint)
        ctx.balancer.begin(endpoint)
        self.record.upstream_host = f"{endpoint.address}:{endpoint.port}"
        self.connector = _CONNECTING
        connector = self.runtime.connect(ctx.reactor, cluster, endpoint, UpstreamFactory(self))
        if self.connector is not _CONNECTING:
            return  # connected (loopback: before connect returned) or failed already
        self.connector = connector
        timeout = ctx.settings.connect_timeout or cluster.connect_timeout
        # The connect timeout is our own timer on the injected clock (not
        # connectTCP's), so it is testable and counted like Envoy's.
        self.connect_timer = ctx.timers.schedule(timeout, self._connect_timed_out)

    def _connect_timed_out(self) -> None:
        self.connect_timer = None
        if self.connector is not None and self.state is CONNECTING:
            connector, self.connector = self.connector, None
            connector.stopConnecting()
            self.upstream_failed(Failure(ierror.TimeoutError("connect timeout")))

    def upstream_failed(self, reason: Failure) -> None:
        """The connect attempt failed or timed out: close the client, flag UF (DF)."""
        self.connector = None
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None
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
        message = f"{cluster.name} {self.record.upstream_host}: {detail}"
        ctx.balancer.state(cluster).recent_errors.append((ctx.reactor.seconds(), message))
        ctx.error(message)
        # outlier detection, then tsgate.io/connect-attempts: the next host, if any
        retry = ctx.balancer.attempt_failed(cluster, self.endpoint, self.tried,
                                            source_ip(self, cluster))
        self.endpoint = None
        if retry is not None:
            ctx.stats.inc("cluster.upstream_cx_connect_attempts", cluster=cluster.name)
            self._connect(retry)
            return
        self.record.response_flags = "DF" if reason.check(ierror.DNSLookupError) else "UF"
        policy = cluster.policy
        if policy is not None and policy.connect_attempts > 1:  # out of attempts: URX
            ctx.stats.inc("cluster.upstream_cx_connect_attempts_exceeded", cluster=cluster.name)
            self.record.response_flags += ",URX"
        # One token, as Envoy renders it (log parsers split on spaces).
        self.record.upstream_transport_failure_reason = "_".join(detail.replace('"', "'").split())
        self.abort()

    def upstream_connected(self, upstream: UpstreamProtocol) -> None:
        """The upstream socket is connected: upstream stages, STARTTLS, relay."""
        self.connector = None
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None
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
        self.ctx.balancer.connected(cluster, self.endpoint)
        self.ctx.stats.inc_key(
            "istio_tcp_connections_opened_total",
            (self.cstate or self.ctx.balancer.state(cluster)).metric_key()
        )
        for stage in self.runtime.upstream_stages:  # on the raw socket (a PROXY header)
            ending = stage(self, transport)
            if ending is not None:
                self.end(ending)
                return
        if cluster.tls is not None and upstream.tls is None:
            if self.preamble is not None and self.tls is not None:
                # Terminated STARTTLS (PostgreSQL) with TLS originated: the
                # upstream's own SSLRequest first, its TLS after the "S".
                self.state = NEGOTIATING
                transport.write(self.preamble.upstream_request)
                return
            tls_stage.start_origination(self, upstream)  # upstream_ready after the handshake
            return
        self.upstream_ready()

    def upstream_ready(self) -> None:
        """Connected (and TLS handshake done when originating): STARTTLS, then the relay."""
        upstream = self.upstream
        assert upstream is not None
        transport = upstream.transport
        if self.preamble is not None and self.tls is None:  # terminated: plaintext upstream
            self.state = NEGOTIATING
            transport.write(self.preamble.upstream_request)
            return
        self.start_relay()

    def upstream_negotiation(self, reply: bytes) -> None:
        """All the upstream has sent during a STARTTLS exchange (so far)."""
        pre = self.preamble
        upstream = self.upstream
        assert pre is not None and upstream is not None
        want = pre.upstream_reply
        if len(reply) < len(want) and want.startswith(reply):
            return
        if reply[: len(want)] != want:
            self.ctx.stats.inc(f"{pre.protocol}.upstream_refused", listener=self.listener.name)
            why = f"upstream refused {pre.protocol} TLS ({reply[:8]!r})"
            self.ctx.error(f"{self.record.upstream_host}: {why}")
            self.end(Ending(termination=f"{pre.protocol}_upstream_refused_tls", why=why))
            return
        extra = reply[len(want):]
        if self.tls is not None and upstream.tls is None:  # originating: TLS next
            if extra:  # bytes before the TLS handshake: refused (CVE-2021-23222)
                self.end(Ending(termination=f"{pre.protocol}_upstream_refused_tls",
                                why=f"upstream sent data before TLS ({extra[:8]!r})"))
                return
            upstream.reply = b""
            tls_stage.start_origination(self, upstream)  # upstream_ready after the handshake
            return
        self.start_relay()
        if extra:
            upstream.dataReceived(extra)

    def upstream_lost(self, reason: Failure) -> None:
        """The upstream connection is fully gone: close the client after flushing."""
        if self.state is CLOSED:
            return
        upstream = self.upstream
        if upstream is not None and upstream.tls is not None and not upstream.tls.done:
            tls_stage.origination_failed(self, upstream, reason)
            return
        if self.state is NEGOTIATING:
            self.termination = "upstream closed during STARTTLS"
        transport = self.transport
        transport.unregisterProducer()
        transport.loseConnection()


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class UpstreamProtocol(Protocol):
    """The upstream side; everything is decided by its connection."""

    __slots__ = ("downstream", "reply", "dataReceived", "transport", "connected", "tls")

    transport: Any

    def __init__(self, downstream: ConnectStage) -> None:
        self.transport = None
        self.connected = 0
        self.dataReceived = self._before_relay  # type: ignore[method-assign]
        self.downstream = downstream
        self.reply = b""
        #: a tsgate.tls.server.TlsSession when the gateway originates TLS upstream
        self.tls: Any = None

    def connectionMade(self) -> None:
        self.downstream.upstream_connected(self)

    def handshakeCompleted(self) -> None:  # noqa: N802 (IHandshakeListener)
        """The upstream TLS handshake (origination) completed and verified."""
        tls_stage.origination_done(self)

    def relay_to(self, receive: Callable[[bytes], None]) -> None:
        """From now on each chunk goes straight to ``receive`` (the connection's relay)."""
        self.dataReceived = receive  # type: ignore[method-assign, assignment]

    def _before_relay(self, data: bytes) -> None:
        """Before relaying: only a STARTTLS reply is expected. (``dataReceived``.)"""
        down = self.downstream
        if down.state is NEGOTIATING:
            self.reply += data
            down.upstream_negotiation(self.reply)
        elif down.state is RELAYING:  # pragma: no cover  (relay_to replaced this method)
            self.dataReceived(data)

    def readConnectionLost(self) -> None:
        self.downstream.upstream_read_lost()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.downstream.upstream_lost(reason)


class UpstreamFactory(ClientFactory):
    """One connect attempt for one connection."""

    #: no "Starting factory" / "Stopping factory" log events: two per
    #: connection cost a quarter of the gateway's time per connection
    noisy = False

    def __init__(self, downstream: ConnectStage) -> None:
        self.downstream = downstream

    def buildProtocol(self, addr: Any) -> Optional[UpstreamProtocol]:
        return UpstreamProtocol(self.downstream)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not reason.check(ierror.UserError):  # our own stopConnecting()
            self.downstream.upstream_failed(reason)
