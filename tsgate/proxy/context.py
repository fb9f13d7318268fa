"""
What every proxied connection shares: clock, reactor, stats, access log,
balancer, plugins and settings. One instance per gateway process; it outlives
reloads (only the route table changes).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import attrs
from twisted.internet.interfaces import IReactorFDSet

from tsgate.accesslog import AccessLog
from tsgate.authz.limits import Guards
from tsgate.proxy.dial import lean_connect
from tsgate.proxy.stages import Connect, StageProvider, connect_tcp
from tsgate.proxy.timers import TimerWheel
from tsgate.routing import Decision, Listener
from tsgate.stats import Stats
from tsgate.upstream.balancer import Balancer

#: Read size for relayed sockets. Large reads are what make a Python relay
#: fast on bulk streams (one recv per 256 KiB instead of per 64 KiB); the same
#: number is the write high-water mark at which the other side is paused, so
#: each direction buffers at most about twice this.
READ_SIZE = 256 * 1024

#: The ``max_bytes`` assumed for an inspector whose own is not a positive
#: integer (a plugin breaking its contract): the TLS hint parser's cap.
FALLBACK_MAX_BYTES = 16 * 1024

#: Envoy's listener_filters_timeout default.
DEFAULT_INSPECT_TIMEOUT = 15.0

#: Istio's tcp_reporting_duration default: byte counters flush this often.
METRICS_FLUSH_INTERVAL = 5.0


@attrs.define
class Settings:
    inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT
    #: overrides Cluster.connect_timeout when set (command line)
    connect_timeout: Optional[float] = None
    #: overrides Route.idle_timeout when set (command line); 0 disables
    idle_timeout: Optional[float] = None
    read_size: int = READ_SIZE
    #: accept and connect with tsgate's own lean transport (tsgate.proxy.transport)
    #: when the reactor provides IReactorFDSet; False: Twisted's tcp transports
    lean: bool = False


@attrs.define
class ProxyContext:
    """Shared services of the data path, passed in (never global)."""

    reactor: Any  # IReactorTCP + IReactorTime
    stats: Stats = attrs.field(factory=Stats)
    access_log: AccessLog = attrs.field(factory=lambda: AccessLog(None))
    balancer: Balancer = attrs.field(factory=Balancer)
    settings: Settings = attrs.field(factory=Settings)
    #: What inspecting listeners offer the first client bytes to, in order:
    #: TLS hint parsers, then IPreambleNegotiator providers (STARTTLS), then
    #: other hint parsers (which send a recognised non-TLS client to the TCP
    #: fallback route at once instead of after the inspection timeout).
    inspectors: Sequence[Any] = ()
    #: a listener's (protocol, port name) servers -> IStreamObserverFactory providers
    observers_for: Optional[Callable[[Sequence[tuple[str, str]]], Sequence[Any]]] = None
    #: observer factories by plugin name, for the tsgate.io/observers annotation
    observers_by_name: Mapping[str, Any] = attrs.field(factory=dict)
    #: live connections (DownstreamProtocol instances), for admin and drain
    connections: set = attrs.field(factory=set)
    recent_errors: collections.deque = attrs.field(factory=lambda: collections.deque(maxlen=50))
    #: per-listener source limits and recent denials (tsgate.authz), kept across reloads
    guards: Guards = attrs.field(factory=Guards)
    #: features' stages, asked once per listener per table (tsgate.proxy.stages)
    stage_providers: list[StageProvider] = attrs.field(factory=list)
    #: per-connection deadlines (inspection, connect, idle, duration) on one reactor timer
    timers: TimerWheel = attrs.field(
        default=attrs.Factory(lambda self: TimerWheel(self.reactor), takes_self=True)
    )

    #: the reactor's clock as one bound method shared by every connection
    now: Callable[[], float] = attrs.field(
        default=attrs.Factory(lambda self: self.reactor.seconds, takes_self=True)
    )

    def error(self, message: str) -> None:
        self.recent_errors.append((self.reactor.seconds(), message))

    def runtime(self, listener: Listener) -> ListenerRuntime:
        """
        What the data path needs per listener, worked out once per table: the
        knobs the compiler settled on the listener, the inspectors with their
        ``max_bytes``, the observers chosen, the stages the features add.
        """
        timeout = listener.inspect_timeout
        if timeout is None:
            timeout = self.settings.inspect_timeout
        names = listener.observer_names
        if names is not None:
            observers = []
            for name in names:
                factory = self.observers_by_name.get(name)
                if factory is None:
                    self.error(f"listener {listener.name}: tsgate.io/observers names unknown "
                               f"observer plugin {name!r}; see `tsgate plugins`")
                else:
                    observers.append(factory)
            chosen: Sequence[Any] = tuple(observers)
        elif self.observers_for is not None and listener.servers:
            chosen = tuple(self.observers_for(listener.servers))
        else:
            chosen = ()
        stages = [provider(listener) for provider in self.stage_providers]
        lean = self.settings.lean and IReactorFDSet.providedBy(self.reactor)
        connect: Connect = lean_connect if lean else connect_tcp
        for extra in stages:
            if extra.connect is not None:
                connect = extra.connect
        inspectors = tuple((inspector, max_bytes(inspector)) for inspector in self.inspectors) \
            if listener.inspect else ()
        return ListenerRuntime(
            listener, timeout, chosen, Stats.label_key(listener=listener.name),
            inspectors=inspectors,
            listener_stages=tuple(s for extra in stages for s in extra.listener),
            decision_checks=tuple(c for extra in stages for c in extra.decision),
            accept_checks=tuple(a for extra in stages for a in extra.accept),
            upstream_stages=tuple(u for extra in stages for u in extra.upstream),
            close_hooks=tuple(h for extra in stages for h in extra.close),
            connect=connect,
        )


@attrs.frozen
class ListenerRuntime:
    """A listener with its knobs, observers and stages, ready for the data path."""

    listener: Listener
    inspect_timeout: float
    observers: Sequence[Any] = ()
    #: ``listener=<name>`` as a prebuilt stats key (per-connection counters)
    stats_key: tuple[tuple[str, str], ...] = ()
    #: what inspection offers the first bytes to, in order (the context's
    #: ``inspectors``), each with its ``max_bytes``: it is never given more, and
    #: undecided at that many bytes it counts as too large; empty on a listener
    #: that does not inspect
    inspectors: tuple[tuple[Any, int], ...] = ()
    #: the pipeline's hooks (tsgate.proxy.stages), in provider order
    listener_stages: tuple[Any, ...] = ()
    decision_checks: tuple[Any, ...] = ()
    accept_checks: tuple[Any, ...] = ()
    upstream_stages: tuple[Any, ...] = ()
    close_hooks: tuple[Any, ...] = ()
    connect: Connect = connect_tcp
    #: the listener's TCP decision, the same for every connection that gets it
    tcp_decision: Decision = attrs.field(
        default=attrs.Factory(lambda self: Decision(self.listener.tcp_route, "tcp", "TCP route"),
                              takes_self=True))

    @property
    def reads_first(self) -> bool:
        """Whether the connection reads client bytes before choosing a route."""
        return self.listener.inspect or bool(self.listener_stages)


def max_bytes(inspector: Any) -> int:
    """An inspector's ``max_bytes`` (IHintParser), or :data:`FALLBACK_MAX_BYTES` if unusable."""
    value = getattr(inspector, "max_bytes", None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return FALLBACK_MAX_BYTES
