"""
The per-connection state every stage reads and writes, and the ways out.

A proxied connection is one object (:class:`tsgate.proxy.connection.
DownstreamProtocol`) whose class is built stage by stage, one module per
stage, each a subclass of the one after it in the pipeline::

    ConnectionState (this module: fields, addresses, end, abort)
      └ CloseRecord      (tsgate.proxy.record:   access record, metrics at close)
        └ RelayStage     (tsgate.proxy.relay:    both directions, half-close, limits, observers)
          └ ConnectStage (tsgate.proxy.upstream: balancer, connect, timeout, STARTTLS upstream)
            └ DecideStage  (tsgate.proxy.decide:  route, decision checks)
              └ InspectStage (tsgate.proxy.inspect: listener stages, ClientHello/STARTTLS)
                └ DownstreamProtocol (tsgate.proxy.connection: accept, client half-close)

so a stage calls the next stage's entry point as a method of the same object
(no per-stage allocation, no indirection on the relay's hot path), and any
stage can end the connection with :meth:`ConnectionState.end`. One set of
``__slots__``, here: an idle gateway holds thousands of these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.protocol import Protocol

from tsgate.accesslog import AccessRecord
from tsgate.proxy.stages import Ending

if TYPE_CHECKING:  # pragma: no cover
    from tsgate.interfaces import Hint, Preamble
    from tsgate.proxy.context import ListenerRuntime, ProxyContext
    from tsgate.proxy.upstream import UpstreamProtocol
    from tsgate.routing import Cluster, Decision, Listener, Route
    from tsgate.upstream.balancer import ClusterState

INSPECTING = "inspecting"
CONNECTING = "connecting"
NEGOTIATING = "negotiating"
RELAYING = "relaying"
CLOSED = "closed"


def format_address(addr: Any) -> str:
    """``host:port`` (``[v6]:port``) of a Twisted address; a unix socket's name."""
    host = getattr(addr, "host", None)
    if host is None:
        name = getattr(addr, "name", None) or "-"
        # Twisted keeps a unix socket's path as bytes (UNIXAddress.name)
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    if ":" in host:
        return f"[{host}]:{addr.port}"
    return f"{host}:{addr.port}"


class ConnectionState(Protocol):
    """Fields of one proxied connection, and the exits every stage may take."""

    # ``dataReceived`` is a slot so that each stage can swap in its own
    # method per connection (inspection, then the lean relay).
    __slots__ = (
        "ctx", "listener", "runtime", "state", "buffer", "stage_index", "bytes_received",
        "bytes_sent", "reported_received", "reported_sent", "client_eof", "upstream_eof",
        "observers", "last_activity", "termination", "started", "record", "decision", "route",
        "cluster", "cstate", "endpoint", "upstream", "preamble", "hint", "idle_timeout",
        "inspect_timer", "connect_timer", "idle_timer", "duration_timer", "connector",
        "counted_active", "now", "up_write", "down_write", "_peer", "_remote", "authz", "tried",
        "dataReceived", "transport", "connected", "factory", "tls",
    )

    #: a TCP transport (ITCPTransport + IProducer + IConsumer + half-close)
    transport: Any
    ctx: ProxyContext
    listener: Listener
    runtime: ListenerRuntime
    record: AccessRecord
    started: float
    now: Callable[[], float]
    up_write: Callable[[bytes], None]
    down_write: Callable[[bytes], None]

    def __init__(self, ctx: ProxyContext, listener: Listener,
                 runtime: Optional[ListenerRuntime] = None) -> None:
        self.transport = None
        self.connected = 0
        self.factory = None
        self.ctx = ctx
        #: the listener (and so the route table) in force when the connection
        #: arrived; a reload never changes where an accepted connection goes
        self.listener = listener
        self.runtime = runtime if runtime is not None else ctx.runtime(listener)
        self.state = INSPECTING
        self.buffer = b""  # client bytes read before the relay, replayed upstream unchanged
        self.stage_index = 0  # the listener stage reading the buffer
        self.bytes_received = 0  # from the client
        self.bytes_sent = 0  # to the client
        self.reported_received = 0  # already added to the byte counters
        self.reported_sent = 0
        self.client_eof = False
        self.upstream_eof = False
        self.observers: Any = ()  # a list once the relay builds any (most routes have none)
        self.last_activity = 0.0
        self.termination = "-"
        self.decision: Optional[Decision] = None
        self.route: Optional[Route] = None
        self.cluster: Optional[Cluster] = None
        #: the balancer's ClusterState of ``cluster`` (looked up once)
        self.cstate: Optional[ClusterState] = None
        self.endpoint: Any = None  # a tsgate.upstream.balancer.HostState once picked
        self.upstream: Optional[UpstreamProtocol] = None
        self.preamble: Optional[Preamble] = None
        self.hint: Optional[Hint] = None
        self.idle_timeout = 0.0
        self.inspect_timer: Any = None
        self.connect_timer: Any = None
        self.idle_timer: Any = None
        self.duration_timer: Any = None
        self.connector: Any = None
        self.counted_active = False
        self._peer: Optional[str] = None
        self._remote: Optional[str] = None
        #: the connection's standing with policies and limits (tsgate.authz.gate)
        self.authz: Any = None
        #: a tsgate.tls.server.TlsSession once the gateway terminates this client's TLS
        self.tls: Any = None
        #: upstream hosts tried so far (tsgate.io/connect-attempts)
        self.tried: list[Any] = []

    # -- addresses -----------------------------------------------------------

    @property
    def peer_address(self) -> str:
        """The socket peer (Istio's downstream_peer_address), formatted on first use."""
        peer = self._peer
        if peer is None:
            transport = self.transport
            peer = format_address(transport.getPeer()) if transport is not None else "-"
            self._peer = peer
        return peer

    @property
    def remote_address(self) -> str:
        """
        The client's address (Istio's downstream_remote_address): as a PROXY
        protocol header declared it, else the socket peer.
        """
        remote = self._remote
        return remote if remote is not None else self.peer_address

    @remote_address.setter
    def remote_address(self, address: str) -> None:
        self._remote = address

    # -- the ways out ----------------------------------------------------------

    def end(self, ending: Ending) -> None:
        """A stage's verdict: record why, then close the client (and the upstream) now."""
        record = self.record
        if ending.flag != "-":
            record.response_flags = ending.flag
        if ending.details != "-":
            record.response_code_details = ending.details
        if ending.termination != "-":
            record.connection_termination_details = ending.termination
        if ending.why:
            self.termination = ending.why
        if ending.counter is not None:
            name, labels = ending.counter
            self.ctx.stats.inc_key(name, labels)
        self.abort()

    def abort(self) -> None:
        """Close the client now (nothing of ours is left to flush to it)."""
        if self.connector is not None:
            connector, self.connector = self.connector, None
            connector.stopConnecting()
        self.transport.loseConnection()
        if self.tls is not None:
            # A terminated client: the TLS layer has queued its close_notify
            # and would wait for the client's (reading is paused before the
            # upstream is connected, so it never came): close the socket now.
            inner = getattr(self.transport, "transport", None)
            if inner is not None:
                inner.loseConnection()
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def finish(self) -> None:
        """Both directions are done: close both sockets (writes already flushed)."""
        self.transport.loseConnection()
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def cancel_timers(self) -> None:
        for name in ("inspect_timer", "connect_timer", "idle_timer", "duration_timer"):
            timer = getattr(self, name)
            if timer is not None:
                if timer.active():
                    timer.cancel()
                setattr(self, name, None)
