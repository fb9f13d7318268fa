"""
The decision stage (tsgate.proxy.decide), one behaviour per test, each
named after the mutant of docs/mutation-report.md ("data path") it kills.
"""

from __future__ import annotations

from typing import Any

from tests.proxy.test_terminated_relay import terminating_listener
from tests.support.proxy import Harness, route
from tests.support.samples import client_hello
from tsgate.proxy.state import INSPECTING
from tsgate.routing import Cluster, Listener, SniChain

LISTENER = "0.0.0.0_31400"
TLS_ONLY = Listener(bind="0.0.0.0", port=31400,
                    tls_chains=(SniChain(("a.example.test",), route("default/a#tls[0]")),))
NO_ENDPOINT = Cluster(name="outbound|1||none", host="none", port=1, endpoints=())



def written(transport: Any) -> bytes:
    """What the code under test wrote to a StringTransport (typed for mypy)."""
    return bytes(transport.value())

def test_inspection_timeout_without_a_chain_says_so() -> None:
    """
    A silent client on a TLS-only port: closed ``NR`` with the route field
    ``none`` and the reason in words for admin (planted: the termination
    left unset, the route field left empty).
    """
    h = Harness(TLS_ONLY, inspect_timeout=3)
    protocol, down = h.accept()
    h.reactor.advance(3.2)
    assert down.disconnecting
    assert protocol.termination == "inspection timed out"
    h.close(protocol)
    record = h.records[0]
    assert (record.response_flags, record.response_code_details, record.route_name) == (
        "NR", "filter_chain_not_found", "none")
    # a timeout is counted as such, not also as a chain miss
    assert h.ctx.stats.get("listener.no_filter_chain_match", listener=LISTENER) == 0
    assert h.ctx.stats.get("listener.downstream_pre_cx_timeout", listener=LISTENER) == 1


def test_bytes_after_a_verdict_at_accept_are_not_routed_again() -> None:
    """
    A plain TCP listener decides at accept; when that decision ends the
    connection (``UH``) before the socket is gone, bytes the client already
    sent are buffered, not decided a second time (planted: ``route_by`` not
    keeping its decision).
    """
    listener = Listener(bind="0.0.0.0", port=31400,
                        tcp_route=route(cluster=NO_ENDPOINT))
    h = Harness(listener)
    protocol, down = h.accept()
    assert protocol.state is INSPECTING and down.disconnecting
    protocol.dataReceived(b"late")
    h.close(protocol)
    assert [r.response_flags for r in h.records] == ["UH"]
    assert h.ctx.stats.get("cluster.upstream_cx_none_healthy", cluster=NO_ENDPOINT.name) == 1


def test_a_terminating_chain_answers_the_handshake_before_connecting() -> None:
    """
    A chain that terminates TLS: the buffered ClientHello goes to the
    gateway's TLS layer, which answers with its ServerHello; nothing is
    connected upstream until the handshake completes (planted: the
    termination skipped, or started without the connection or decision).
    """
    h = Harness(terminating_listener())
    protocol, down = h.accept()
    protocol.dataReceived(client_hello("a.example.test"))
    assert protocol.tls is not None and protocol.tls.facts["tls_mode"] == "SIMPLE"
    assert protocol.route is None  # the decision checks run after the handshake
    assert h.reactor.tcpClients == []
    answer = written(down)
    assert answer[:1] == b"\x16", answer[:16]  # a TLS handshake record: the ServerHello
    assert not down.disconnecting


def test_decision_checks_see_the_decision_and_their_ending_is_logged() -> None:
    """A decision check gets the connection and the decision; its Ending closes the client."""
    from tsgate.proxy.stages import Ending, Stages

    seen: list[Any] = []

    def check(conn: Any, decision: Any) -> Any:
        seen.append((conn, decision.chain, decision.route.name))
        return Ending("UAEX", "rbac_access_denied", why="denied")

    listener = Listener(bind="0.0.0.0", port=31400, tcp_route=route())
    h = Harness(listener, [lambda _listener: Stages(decision=(check,))])
    protocol, down = h.accept()
    assert seen == [(protocol, "tcp", "default/echo#tcp[0]")]
    assert down.disconnecting and h.reactor.tcpClients == []
    h.close(protocol)
    assert (h.records[0].response_flags, h.records[0].response_code_details) == (
        "UAEX", "rbac_access_denied")
    assert h.records[0].upstream_cluster == "-"  # no cluster was picked
