"""
The close record: the last stage of a connection, once both sockets are gone.

Writes the access record (Istio's fields, plus what the hint parser,
STARTTLS and the observers learned) and settles the metrics: listener
gauges and lengths, the cluster's active count, Istio's byte and
connections-closed counters with the response flag. The client address
comes from ``remote_address`` (Istio's downstream_remote_address: a PROXY
protocol header's source when there was one), the socket peer from
``peer_address`` (downstream_peer_address). Close hooks of the features
run first (``ListenerRuntime.close_hooks``).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger

from tsgate.proxy.state import ConnectionState
from tsgate.upstream.balancer import ClusterState

log = Logger(namespace="tsgate.proxy")

#: Istio metric labels of a connection that no route took (``NR``): the
#: destination is unknown, as Istio labels what it does not know.
UNROUTED = ClusterState("-", metric_labels={
    "reporter": "source", "source_workload": "tsgate", "source_workload_namespace": "unknown",
    "destination_service": "unknown", "destination_service_name": "unknown",
    "destination_service_namespace": "unknown", "request_protocol": "tcp",
    "connection_security_policy": "unknown",
})


class CloseRecord(ConnectionState):
    """The close-record stage (see the module docstring)."""

    __slots__ = ()

    def write_close_record(self, previous: str) -> None:
        """The connection is closed (it was in state ``previous``): account for it."""
        ctx = self.ctx
        for hook in self.runtime.close_hooks:
            try:
                hook(self)
            except Exception:
                log.failure("close hook crashed")
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
            record.downstream_remote_address = self.remote_address
            record.downstream_peer_address = self.peer_address
            record.hints = self.hints()
        cluster = self.cluster
        if self.counted_active and cluster is not None:
            state = self.cstate or ctx.balancer.state(cluster)
            state.active -= 1
            ctx.balancer.release(self.endpoint)  # the host's active count
            ctx.stats.gauge_add_key("cluster.upstream_cx_active", state.cluster_key, -1)
        self.count_closed(record.response_flags)
        ctx.access_log.emit(record)

    def count_closed(self, response_flags: str) -> None:
        """
        Istio's connection counters for a closing connection: every one is
        counted closed with its response flags (``UF``, ``UH``, ``UO``, ``NR``,
        ...). One whose upstream never opened is counted opened now, as
        Istio's stats filter counts a connection opened at its first report
        (at the latest its close), so opened minus closed is what is open.
        Without a cluster (``NR``) the destination labels are ``unknown``.
        """
        cluster = self.cluster
        state = (self.cstate or self.ctx.balancer.state(cluster)) if cluster is not None \
            else UNROUTED
        stats = self.ctx.stats
        if self.upstream is None:
            stats.inc_key("istio_tcp_connections_opened_total", state.metric_key())
        else:
            self.flush_byte_counters()
        stats.inc_key("istio_tcp_connections_closed_total", state.metric_key(response_flags))

    def hints(self) -> Optional[dict[str, str]]:
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
        if self.tls is not None:  # terminated TLS: version, cipher, peer certificate
            attributes.update(self.tls.facts)
        if self.upstream is not None and self.upstream.tls is not None:  # originated TLS
            attributes.update(self.upstream.tls.facts)
        attributes.pop("sni", None)  # already %REQUESTED_SERVER_NAME%
        return {k: str(v) for k, v in attributes.items() if v not in (None, "")} or None

    def flush_byte_counters(self) -> None:
        """Add the bytes moved since the last flush to Istio's byte counters."""
        cluster = self.cluster
        if cluster is None:
            return
        received = self.bytes_received - self.reported_received
        sent = self.bytes_sent - self.reported_sent
        if not (received or sent):
            return
        key = (self.cstate or self.ctx.balancer.state(cluster)).metric_key()
        stats = self.ctx.stats
        stats.inc_key("istio_tcp_received_bytes_total", key, received)
        stats.inc_key("istio_tcp_sent_bytes_total", key, sent)
        self.reported_received = self.bytes_received
        self.reported_sent = self.bytes_sent
