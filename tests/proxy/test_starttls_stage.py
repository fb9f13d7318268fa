"""
STARTTLS through the pipeline (inspect: the client's request; upstream: the
upstream's reply) on the unit-test harness, with PostgreSQL's SSLRequest:
each test states the planted bug (a mutant of docs/mutation-report.md,
"data path") it catches.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error as ierror
from twisted.python.failure import Failure

from tests.support.proxy import Harness, route
from tests.support.samples import client_hello
from tsgate.hints.postgres import PostgresStartTlsNegotiator
from tsgate.hints.tls import TlsHintParser
from tsgate.interfaces import NeedMore, NotMine, Preamble
from tsgate.proxy.state import CLOSED, CONNECTING, INSPECTING, NEGOTIATING, RELAYING
from tsgate.routing import Listener, SniChain

LISTENER = "0.0.0.0_5432"
PG = Listener(bind="0.0.0.0", port=5432,
              tls_chains=(SniChain(("db.example.test",), route("default/db#tls[0]")),))
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
HELLO = client_hello("db.example.test")



def written(transport: Any) -> bytes:
    """What the code under test wrote to a StringTransport (typed for mypy)."""
    return bytes(transport.value())


def clear(transport: Any) -> None:
    transport.clear()

def harness() -> Harness:
    h = Harness(PG)
    h.ctx.inspectors = [TlsHintParser(), PostgresStartTlsNegotiator()]
    return h


def negotiating(h: Harness):  # type: ignore[no-untyped-def]
    protocol, down = h.accept()
    protocol.dataReceived(SSL_REQUEST)
    protocol.dataReceived(HELLO)
    upstream, up = h.connect_upstream()
    return protocol, down, upstream, up


def test_request_answered_then_hello_routed_and_replayed_after_the_upstream_agrees() -> None:
    """
    The gateway answers the client's SSLRequest ``S`` (and drops it), routes
    the ClientHello by SNI, sends the SSLRequest upstream, and replays the
    hello only after the upstream's ``S`` (planted: the request not
    consumed, no answer, the wrong state, the hello sent before the reply).
    """
    h = harness()
    protocol, down = h.accept()
    protocol.dataReceived(SSL_REQUEST)
    assert written(down) == b"S"
    assert protocol.state is INSPECTING and h.reactor.tcpClients == []
    assert h.ctx.stats.get("postgres.starttls", listener=LISTENER) == 1
    protocol.dataReceived(HELLO)
    assert protocol.state is CONNECTING
    assert protocol.record.requested_server_name == "db.example.test"
    upstream, up = h.connect_upstream()
    assert protocol.state is NEGOTIATING
    assert written(up) == SSL_REQUEST
    clear(up)
    upstream.dataReceived(b"S")
    assert protocol.state is RELAYING
    assert written(up) == HELLO
    assert protocol.bytes_received == len(HELLO)
    h.close(protocol)
    record = h.records[0]
    assert record.response_flags == "-"
    assert record.hints is not None
    assert (record.hints["starttls"], record.hints["request"]) == ("postgres", "ssl")


def test_request_and_hello_in_one_read() -> None:
    """A client that sends its ClientHello with the SSLRequest is inspected at once."""
    h = harness()
    protocol, down = h.accept()
    protocol.dataReceived(SSL_REQUEST + HELLO)
    assert written(down) == b"S"
    assert protocol.route is not None and protocol.route.name == "default/db#tls[0]"
    assert len(h.reactor.tcpClients) == 1


def test_a_second_request_is_not_honoured() -> None:
    """
    One STARTTLS per connection: a second SSLRequest is not answered again;
    it is not TLS, so the connection ends without a route (planted: every
    request answered).
    """
    h = harness()
    protocol, down = h.accept()
    protocol.dataReceived(SSL_REQUEST)
    protocol.dataReceived(SSL_REQUEST)
    assert written(down) == b"S"
    assert h.ctx.stats.get("postgres.starttls", listener=LISTENER) == 1
    assert h.ctx.stats.get("tls_inspector.tls_not_found", listener=LISTENER) == 1
    assert down.disconnecting
    h.close(protocol)
    assert h.records[0].response_flags == "NR"


def test_upstream_reply_in_pieces_and_with_bytes_after_it() -> None:
    """
    The upstream's reply may come split, and what follows it in the same
    read is the server's first TLS bytes: relayed to the client and counted
    (planted: a partial reply taken as a refusal, the extra bytes dropped).
    """
    h = harness()
    protocol, down, upstream, up = negotiating(h)
    clear(down)
    upstream.dataReceived(b"")
    assert protocol.state is NEGOTIATING
    upstream.dataReceived(b"S\x16\x03\x03")
    assert protocol.state is RELAYING
    assert written(down) == b"\x16\x03\x03"
    assert protocol.bytes_sent == 3


def test_upstream_refusal_closes_the_client() -> None:
    """
    The upstream answers ``N``: the client is closed (it would otherwise
    send its ClientHello to a plaintext server), counted, logged as an error
    with the reply (planted: the relay carries on).
    """
    h = harness()
    protocol, down, upstream, up = negotiating(h)
    clear(up)
    upstream.dataReceived(b"N")
    assert down.disconnecting and up.disconnecting
    assert written(up) == b""  # the hello never reached the server
    assert protocol.state is NEGOTIATING
    assert h.ctx.stats.get("postgres.upstream_refused", listener=LISTENER) == 1
    why = "upstream refused postgres TLS (b'N')"
    assert protocol.termination == why
    assert h.ctx.recent_errors[-1][1] == f"127.0.0.1:2701: {why}"
    h.close(protocol)
    assert h.records[0].connection_termination_details == "postgres_upstream_refused_tls"


def test_upstream_fin_during_negotiation_aborts() -> None:
    """The upstream half-closes before replying: the client is closed at once."""
    h = harness()
    protocol, down, upstream, up = negotiating(h)
    upstream.readConnectionLost()
    assert protocol.upstream_eof
    assert down.disconnecting and not down.write_closed
    assert protocol.termination == "upstream closed during STARTTLS"


def test_upstream_gone_during_negotiation() -> None:
    """The upstream closes before replying: the client is closed, the reason kept."""
    h = harness()
    protocol, down, upstream, up = negotiating(h)
    down.producer = up  # as the relay would have registered it
    upstream.connectionLost(Failure(ierror.ConnectionDone()))
    assert down.disconnecting and down.producer is None
    assert protocol.termination == "upstream closed during STARTTLS"
    h.close(protocol)
    assert protocol.state is CLOSED
    assert len(h.records) == 1


class LineStartTls:
    """A STARTTLS of lines (SMTP-like): the upstream must answer ``220 go\\r\\n``."""

    name = "line-starttls"
    protocol = "line"

    def parse(self, data: bytes) -> Any:
        if not data.startswith(b"STARTTLS\r\n"):
            return NotMine("no") if not b"STARTTLS\r\n".startswith(data) else NeedMore()
        return Preamble(protocol="line", length=10, client_reply=b"220 go\r\n",
                        upstream_request=b"STARTTLS\r\n", upstream_reply=b"220 go\r\n")


def test_a_longer_upstream_reply_in_pieces() -> None:
    """The upstream's reply is gathered over reads (planted: only the last read kept)."""
    h = Harness(PG)
    h.ctx.inspectors = [TlsHintParser(), LineStartTls()]
    protocol, down = h.accept()
    protocol.dataReceived(b"STARTTLS\r\n" + HELLO)
    assert written(down) == b"220 go\r\n"
    upstream, up = h.connect_upstream()
    assert written(up) == b"STARTTLS\r\n"
    for piece in (b"22", b"0 g", b"o\r"):
        upstream.dataReceived(piece)
        assert protocol.state is NEGOTIATING
    upstream.dataReceived(b"\n")
    assert protocol.state is RELAYING
    assert written(up) == b"STARTTLS\r\n" + HELLO


def test_a_refusal_is_logged_with_its_first_eight_bytes() -> None:
    h = harness()
    protocol, down, upstream, up = negotiating(h)
    upstream.dataReceived(b"ERROR: no TLS here")
    why = "upstream refused postgres TLS (b'ERROR: n')"
    assert protocol.termination == why
