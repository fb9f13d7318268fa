"""
The gateway service: listening sockets for a route table, and swapping tables.

A :class:`Gateway` owns one :class:`ListenerFactory` per compiled listener.
Each factory holds the *current* ``Listener``; a connection snapshots it at
accept time, so swapping a factory's listener on reload changes where new
connections go and never touches established ones. Listeners that disappear
from the table stop listening (their connections carry on); new ones start.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

import attrs
from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsgate.proxy.connection import DownstreamProtocol
from tsgate.proxy.context import METRICS_FLUSH_INTERVAL, ProxyContext
from tsgate.proxy.listen import lean_adopt, lean_listen, max_backlog
from tsgate.routing import Listener, RouteTable

log = Logger(namespace="tsgate.gateway")


class ListenError(Exception):
    """A listener could not be bound; the message names it."""


class ListenerFactory(ServerFactory):
    """Builds a DownstreamProtocol for each accepted connection of one listener."""

    noisy = False

    def __init__(self, ctx: ProxyContext, listener: Listener) -> None:
        self.ctx = ctx
        self.listener = listener

    @property
    def listener(self) -> Listener:
        return self._runtime.listener

    @listener.setter
    def listener(self, listener: Listener) -> None:
        # Swapped on reload; connections keep the runtime they were accepted with.
        self._runtime = self.ctx.runtime(listener)

    def buildProtocol(self, addr: Any) -> DownstreamProtocol:
        runtime = self._runtime
        protocol = DownstreamProtocol(self.ctx, runtime.listener, runtime)
        protocol.factory = self
        return protocol


@attrs.frozen
class ConnectionInfo:
    """One live connection, as the admin endpoints show it."""

    listener: str
    route: Optional[str]
    cluster: Optional[str]
    upstream: Optional[str]
    downstream: str
    sni: Optional[str]
    started: float
    bytes_received: int
    bytes_sent: int
    state: str


def listener_endpoint(listener: Listener, bind_override: Optional[str],
                      overrides: dict[int, str]) -> str:
    """The Twisted endpoint string a listener listens on."""
    if listener.port in overrides:
        return overrides[listener.port]
    if listener.bind.startswith("unix://"):
        return unix_endpoint(listener.bind)
    bind = listener.bind
    if bind_override and bind in ("0.0.0.0", "::"):
        bind = bind_override
    kind = "tcp6" if ":" in bind else "tcp"
    bind_escaped = bind.replace(":", "\\:")
    # A deep accept queue: Twisted's default of 50 drops SYNs under a burst of
    # connections (each drop costs the client a 1 s retransmit); as deep as the
    # system allows (net.core.somaxconn), as HAProxy and Envoy ask.
    return f"{kind}:port={listener.port}:interface={bind_escaped}:backlog={max_backlog()}"


def plain_tcp(description: str) -> Optional[tuple[int, str, Optional[int]]]:
    """
    ``(port, interface, backlog)`` of a plain ``tcp:``/``tcp6:`` endpoint
    string (only ``port``, ``interface`` and ``backlog``), else None: such a
    listener can use the lean port; anything else goes to Twisted's endpoints.
    """
    fields = description.replace("\\:", "\0").split(":")
    kind, args = fields[0], [f.replace("\0", ":") for f in fields[1:]]
    if kind not in ("tcp", "tcp6") or not args:
        return None
    options = {"interface": "::" if kind == "tcp6" else "0.0.0.0"}
    for i, arg in enumerate(args):
        key, sep, value = arg.partition("=")
        if not sep:
            if i:
                return None
            key, value = "port", arg
        if key not in ("port", "interface", "backlog"):
            return None
        options[key] = value
    try:
        port = int(options["port"])
        backlog = int(options["backlog"]) if "backlog" in options else None
    except (KeyError, ValueError):
        return None
    return port, options["interface"], backlog


def unix_endpoint(bind: str) -> str:
    """``unix:///run/gw.sock`` / ``unix://@name`` (Linux abstract socket) as an endpoint."""
    path = bind[len("unix://"):]
    lockfile = 1  # path.lock beside the socket: a stale socket file is then replaced
    if path.startswith("@"):
        path, lockfile = "\0" + path[1:], 0
    escaped = path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
    return f"unix:address={escaped}:lockfile={lockfile}:backlog=1024"


def _downstream(conn: DownstreamProtocol) -> str:
    """The client's address (a PROXY protocol header's, else the socket peer's)."""
    return conn.remote_address


class Gateway(service.MultiService):
    """
    The running gateway. ``load`` is a callable returning a config result
    (``.ok``, ``.errors``, ``.table``) so reloads re-read the same paths.
    """

    def __init__(
        self,
        reactor: Any,
        ctx: ProxyContext,
        load: Callable[[], Any],
        *,
        bind_override: Optional[str] = None,
        endpoint_overrides: Optional[dict[int, str]] = None,
        initial: Any = None,
        drain_period: float = 5.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.reactor = reactor
        self.ctx = ctx
        self.stats = ctx.stats
        self._load = load
        self.bind_override = bind_override
        self.endpoint_overrides = endpoint_overrides or {}
        self.config = initial if initial is not None else load()
        self.table: RouteTable = self.config.table
        self.factories: dict[tuple[str, int], ListenerFactory] = {}
        self.ports: dict[tuple[str, int], Any] = {}
        self.drain_period = drain_period
        self.ready = False
        self.draining = False
        self._drain_waiters: list[defer.Deferred[int]] = []
        self._drain_result: Optional[int] = None
        self._flusher = LoopingCall(self.flush_metrics)
        self._flusher.clock = reactor

    # -- GatewayState for the admin server --------------------------------

    @property
    def recent_errors(self) -> Sequence[tuple[float, str]]:
        return list(self.ctx.recent_errors)

    @property
    def balancer(self) -> Any:
        """Per-host state (active, ejected, health) for /clusters and the status page."""
        return self.ctx.balancer

    def connections(self) -> Iterable[ConnectionInfo]:
        for conn in list(self.ctx.connections):
            yield ConnectionInfo(
                listener=conn.listener.name,
                route=conn.route.name if conn.route else None,
                cluster=conn.cluster.name if conn.cluster else None,
                upstream=None if conn.record.upstream_host == "-" else conn.record.upstream_host,
                downstream=_downstream(conn),
                sni=None if conn.record.requested_server_name == "-"
                else conn.record.requested_server_name,
                started=conn.started,
                bytes_received=conn.bytes_received,
                bytes_sent=conn.bytes_sent,
                state=conn.state,
            )

    def bound_addresses(self) -> dict[str, str]:
        """Listener name -> the address its socket really has (``127.0.0.1:31400``)."""
        out: dict[str, str] = {}
        for key, port in list(self.ports.items()):
            factory = self.factories.get(key)
            name = factory.listener.name if factory is not None else f"{key[0]}_{key[1]}"
            host = port.getHost()
            addr = getattr(host, "host", None)
            if addr is None:  # a UNIX socket and the like
                out[name] = str(getattr(host, "name", host))
            else:
                out[name] = f"[{addr}]:{host.port}" if ":" in addr else f"{addr}:{host.port}"
        return out

    # -- lifecycle ----------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind every listener before the reactor runs (and before dropping privileges)."""
        self._apply_table(self.table)
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        if not self.ports and self.table.listeners:
            self._apply_table(self.table)
        super().startService()  # type: ignore[no-untyped-call]
        self.ready = True
        self._flusher.start(METRICS_FLUSH_INTERVAL, now=False)

    def stopService(self) -> defer.Deferred[list[Any]]:
        self.ready = False
        if self._flusher.running:
            self._flusher.stop()
        waits = [defer.maybeDeferred(port.stopListening) for port in self.ports.values()]
        self.ports.clear()
        self.ctx.balancer.stop()
        waits.append(defer.maybeDeferred(super().stopService))
        return defer.gatherResults(waits)

    def flush_metrics(self) -> None:
        """Byte counters move during long connections, not only at close."""
        for conn in list(self.ctx.connections):
            conn.flush_byte_counters()

    # -- tables ---------------------------------------------------------------

    def _listen(self, listener: Listener) -> Any:
        description = listener_endpoint(listener, self.bind_override, self.endpoint_overrides)
        factory = ListenerFactory(self.ctx, listener)
        plain = plain_tcp(description) if self.ctx.settings.lean else None
        if plain is not None:
            port = self._listen_lean(listener, factory, description, *plain)
            if port is not None:
                return factory, port
        elif self.ctx.settings.lean:  # a socket handed over (systemd, --workers)
            adopted = lean_adopt(self.reactor, factory, description)
            if adopted is not None:
                self._log_listening(listener, adopted.getHost())
                return factory, adopted
        try:
            endpoint = endpoints.serverFromString(self.reactor, description)
        except Exception as exc:  # a bad string, or systemd: with no socket handed over
            raise ListenError(
                f"cannot listen for {listener.name} on {description}: "
                f"{type(exc).__name__}: {exc or 'no such socket'}"
            ) from None
        result: list[Any] = []
        endpoint.listen(factory).addBoth(result.append)
        if not result:
            raise ListenError(f"listener {listener.name} ({description}): listen did not complete")
        outcome = result[0]
        if isinstance(outcome, Failure):
            raise ListenError(
                f"cannot listen for {listener.name} on {description}: "
                f"{outcome.getErrorMessage()}"
            )
        self._log_listening(listener, outcome.getHost())
        return factory, outcome

    @staticmethod
    def _log_listening(listener: Listener, address: Any) -> None:
        log.info(
            "tsgate listening: {listener} on {address} ({kind})",
            listener=listener.name,
            address=f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}",
            kind="inspects ClientHello" if listener.inspect else "plain TCP",
        )

    def _listen_lean(self, listener: Listener, factory: ListenerFactory, description: str,
                     number: int, interface: str, backlog: Optional[int]) -> Any:
        """A LeanPort (batched accepts, somaxconn backlog), or None on reactors without FDs."""
        try:
            port = lean_listen(self.reactor, factory, number, interface, backlog)
        except CannotListenError as exc:
            raise ListenError(
                f"cannot listen for {listener.name} on {description}: {exc}") from None
        if port is not None:
            self._log_listening(listener, port.getHost())
        return port

    def _apply_table(self, table: RouteTable) -> None:
        wanted = {(listener.bind, listener.port): listener for listener in table.listeners}
        # Bind new listeners first: if one fails, nothing changes.
        new_ports: dict[tuple[str, int], Any] = {}
        new_factories: dict[tuple[str, int], ListenerFactory] = {}
        try:
            for key, listener in wanted.items():
                if key not in self.ports:
                    new_factories[key], new_ports[key] = self._listen(listener)
        except ListenError:
            for port in new_ports.values():
                port.stopListening()
            raise
        for key, listener in wanted.items():
            if key in self.factories:
                self.factories[key].listener = listener
        for key in list(self.ports):
            if key not in wanted:
                self.ports.pop(key).stopListening()
                self.factories.pop(key)
        self.ports.update(new_ports)
        self.factories.update(new_factories)
        self.table = table
        self.ctx.balancer.table_changed(table)  # health checks, DNS names of the new table

    #: whether reload() logs "configuration reloaded" (a worker leaves that to its
    #: supervisor, which says it once every worker has switched)
    announce_reloads = True

    def reload(self) -> Any:
        """
        Load, validate and compile the configuration again and swap it in.
        A bad configuration keeps the running one (errors logged, counted).
        """
        try:
            result = self._load()
        except Exception as exc:  # unreadable files and the like
            self.stats.inc("config.reload_failed")
            self.ctx.error(f"reload failed: {exc}")
            log.error("reload failed: {error}", error=exc)
            return None
        if not result.ok:
            self.stats.inc("config.reload_failed")
            for diagnostic in result.errors:
                log.error("reload rejected: {diagnostic}", diagnostic=str(diagnostic))
            self.ctx.error(f"reload rejected: {len(result.errors)} error(s)")
            return result
        try:
            self._apply_table(result.table)
        except ListenError as exc:
            self.stats.inc("config.reload_failed")
            self.ctx.error(str(exc))
            log.error("reload rejected: {error}", error=str(exc))
            return result
        self.config = result
        self.stats.inc("config.reload_success")
        if self.announce_reloads:
            log.info("configuration reloaded: {n} listener(s)", n=len(result.table.listeners))
        return result

    def drain(self, period: Optional[float] = None) -> defer.Deferred[int]:
        """
        Graceful drain: stop accepting, fail readiness, let connections finish
        for ``period`` seconds (default: the drain period), then close the
        rest. Fires with the number of connections cut. Draining twice (an
        admin POST /drain, then SIGTERM) waits for the same drain.
        """
        if self._drain_result is not None:  # drained already (POST /drain, then SIGTERM)
            return defer.succeed(self._drain_result)
        waiter: defer.Deferred[int] = defer.Deferred()
        self._drain_waiters.append(waiter)
        if self.draining:
            return waiter
        if period is None:
            period = self.drain_period
        self.ready = False
        self.draining = True
        for port in self.ports.values():
            port.stopListening()
        self.ports.clear()
        deadline = self.reactor.seconds() + period
        log.info("draining: {n} connection(s) open, up to {period}s",
                 n=len(self.ctx.connections), period=period)

        def check() -> None:
            if self.ctx.connections and self.reactor.seconds() < deadline:
                self.reactor.callLater(min(0.1, deadline - self.reactor.seconds()), check)
                return
            remaining = list(self.ctx.connections)
            for conn in remaining:
                conn.close_gracefully("drained")
            if remaining:
                log.warn("drain period over: closed {n} connection(s)", n=len(remaining))
            else:
                log.info("drained: no connection was cut")
            self.stats.inc("gateway.drain_cut", len(remaining))
            self._drain_result = len(remaining)
            waiters, self._drain_waiters = self._drain_waiters, []
            for w in waiters:
                w.callback(len(remaining))

        check()
        return waiter
