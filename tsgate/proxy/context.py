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

from tsgate import proxy_protocol
from tsgate.accesslog import AccessLog
from tsgate.config.knobs import INSPECT_TIMEOUT, OBSERVERS, listener_settings
from tsgate.proxy.timers import TimerWheel
from tsgate.routing import Listener
from tsgate.stats import Stats
from tsgate.upstream.balancer import Balancer

#: Read size for relayed sockets. Large reads are what make a Python relay
#: fast on bulk streams (one recv per 256 KiB instead of per 64 KiB); the same
#: number is the write high-water mark at which the other side is paused, so
#: each direction buffers at most about twice this.
READ_SIZE = 256 * 1024

#: Envoy's tls_inspector max_client_hello_size default.
MAX_INSPECT_BYTES = 16 * 1024

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
    max_inspect_bytes: int = MAX_INSPECT_BYTES


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
    #: per-connection deadlines (inspection, connect, idle, duration) on one reactor timer
    timers: TimerWheel = attrs.field(
        default=attrs.Factory(lambda self: TimerWheel(self.reactor), takes_self=True)
    )

    def error(self, message: str) -> None:
        self.recent_errors.append((self.reactor.seconds(), message))

    def runtime(self, listener: Listener) -> ListenerRuntime:
        """What the data path needs per listener, worked out once per table."""
        knobs = listener_settings(listener.annotations)
        timeout = knobs.get(INSPECT_TIMEOUT, self.settings.inspect_timeout)
        names = knobs.get(OBSERVERS)
        if names is not None:
            observers = []
            for name in names:
                factory = self.observers_by_name.get(name)
                if factory is None:
                    self.error(f"listener {listener.name}: {OBSERVERS} names unknown "
                               f"observer plugin {name!r}; see `tsgate plugins`")
                else:
                    observers.append(factory)
            chosen: Sequence[Any] = tuple(observers)
        elif self.observers_for is not None and listener.servers:
            chosen = tuple(self.observers_for(listener.servers))
        else:
            chosen = ()
        return ListenerRuntime(listener, timeout, chosen, Stats.label_key(listener=listener.name),
                               proxy_protocol.listener_setting(listener.annotations))


@attrs.frozen
class ListenerRuntime:
    """A listener with its tsgate.io/ knobs resolved and its observers chosen."""

    listener: Listener
    inspect_timeout: float
    observers: Sequence[Any] = ()
    #: ``listener=<name>`` as a prebuilt stats key (per-connection counters)
    stats_key: tuple[tuple[str, str], ...] = ()
    #: tsgate.io/proxy-protocol settings (tsgate.proxy_protocol.ProxyProtocolIn), None: off
    proxy_in: Any = None
