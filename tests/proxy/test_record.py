"""The close record: what the access log and the metrics say once a connection is gone."""

from __future__ import annotations

from typing import Any

from twisted.internet import error as ierror
from twisted.python.failure import Failure

from tests.support.proxy import Harness, route
from tsgate.proxy.stages import Ending, Stages
from tsgate.routing import Listener

TCP = Listener(bind="0.0.0.0", port=31400, tcp_route=route())
CLUSTER = route().destinations[0].cluster.name


def closed(h: Harness, flag: str) -> float:
    return sum(v for name, key, v in h.ctx.stats.iter_counters()
               if name == "istio_tcp_connections_closed_total"
               and ("response_flags", flag) in key)


def test_relayed_connection_counts_bytes_and_closes_with_no_flag() -> None:
    h = Harness(TCP)
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    protocol.dataReceived(b"12345")
    upstream.dataReceived(b"123")
    h.close(protocol)
    record = h.records[0]
    assert (record.bytes_received, record.bytes_sent, record.response_flags) == (5, 3, "-")
    assert closed(h, "-") == 1
    assert h.ctx.stats.get("cluster.upstream_cx_active", cluster=CLUSTER) == 0
    assert h.ctx.stats.get("listener.downstream_cx_active", listener="0.0.0.0_31400") == 0
    assert protocol not in h.ctx.connections


def test_connect_failure_is_closed_with_uf_and_the_reason() -> None:
    h = Harness(TCP)
    protocol, down = h.accept()
    factory = h.reactor.tcpClients[0][2]
    factory.clientConnectionFailed(None, Failure(ierror.ConnectionRefusedError()))
    h.close(protocol)
    record = h.records[0]
    assert record.response_flags == "UF"
    assert record.upstream_transport_failure_reason.startswith("Connection_was_refused")
    assert h.ctx.stats.get("cluster.upstream_cx_active", cluster=CLUSTER) == 0


def test_a_refused_decision_touches_no_cluster_counter() -> None:
    """
    Refused before any upstream: no cluster counter moves, but Istio's
    connection counters count it once, closed with its flag (issue 17: every
    closed connection is counted with its response flags).
    """

    def deny(conn: Any, decision: Any) -> Ending:
        return Ending("UAEX")

    h = Harness(TCP, [lambda listener: Stages(decision=(deny,))])
    protocol, down = h.accept()
    h.close(protocol)
    assert h.records[0].response_flags == "UAEX"
    assert closed(h, "UAEX") == 1
    assert h.ctx.stats.get("cluster.upstream_cx_total", cluster=CLUSTER) == 0


def test_hints_come_from_parser_preamble_and_observers() -> None:
    h = Harness(TCP)
    h.ctx.access_log.listeners.append(lambda record: None)
    protocol, down = h.accept()
    h.connect_upstream()

    class Observer:
        def attributes(self) -> dict[str, str]:
            return {"user": "sam", "sni": "dropped", "empty": ""}

    protocol.observers = [Observer()]
    h.close(protocol)
    assert h.records[0].hints == {"user": "sam"}
