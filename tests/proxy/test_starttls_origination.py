"""
PostgreSQL offload with TLS originated upstream, through the pipeline on the
unit-test harness: the client's SSLRequest answered and its TLS terminated,
then the upstream gets its own SSLRequest, must answer ``S`` with nothing
after it, and only then the gateway's ClientHello (a real handshake on both
sides: Python's ssl for the client, pyOpenSSL for the server, over string
transports). Each test names the mutants of ``tsgate/proxy/upstream.py`` it
kills (docs/mutation-report.md, "data path").
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL

from tests.proxy.test_originated_tls import ClientCreator, Origination, Server
from tests.proxy.test_terminated_relay import NAME, Client, Termination
from tests.support.proxy import Harness, cluster, route
from tests.support.tlscerts import CA
from tsgate.hints.postgres import PostgresStartTlsNegotiator
from tsgate.hints.tls import TlsHintParser
from tsgate.proxy.state import CONNECTING, NEGOTIATING, RELAYING
from tsgate.routing import Listener, SniChain
from tsgate.tls.server import ServerConnectionCreator

SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


def written(transport: Any) -> bytes:
    """What the code under test wrote to a string transport (typed for mypy)."""
    return bytes(transport.value())


def listener() -> Listener:
    """One chain for NAME: the client's TLS terminated, TLS originated to the cluster."""
    leaf = CA.create().issue(NAME, dns=[NAME])
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate(leaf.cert)
    context.use_privatekey(leaf.key)
    termination = Termination("SIMPLE", ServerConnectionCreator(context))
    upstream_cluster = cluster(tls=Origination(ClientCreator()))
    return Listener(bind="0.0.0.0", port=5432, tls_chains=(
        SniChain((NAME,), route("default/db#tls[0]", cluster=upstream_cluster),
                 termination=termination),))


def handshaken(h: Harness, starttls: bool) -> tuple[Any, Any, Client]:
    """Accepted, (SSLRequest answered,) the client's handshake done."""
    protocol, down = h.accept()
    if starttls:
        protocol.dataReceived(SSL_REQUEST)
        assert written(down) == b"S"
        clear: Any = down.clear
        clear()
    client = Client()
    protocol.dataReceived(client.outgoing.read())
    client.pump(protocol, down)
    assert client.handshake()
    return protocol, down, client


def offload() -> tuple[Harness, Any, Any, Any, Any]:
    h = Harness(listener())
    h.ctx.inspectors = [TlsHintParser(), PostgresStartTlsNegotiator()]
    protocol, down, client = handshaken(h, starttls=True)
    upstream, up = h.connect_upstream()
    return h, protocol, down, upstream, up


def test_the_upstream_gets_its_sslrequest_then_the_gateways_hello() -> None:
    """
    Connected, the upstream is sent the SSLRequest (not a ClientHello) and the
    connection waits for its answer; after ``S`` the gateway's handshake
    starts, and the relay after it (``upstream_connected`` mutants
    ``preamble is None and …``, ``… and self.tls is None``, ``state = None``,
    ``write(None)``; ``upstream_negotiation`` mutants
    ``upstream.tls is not None`` and ``start_origination`` without its
    connection or upstream).
    """
    h, protocol, down, upstream, up = offload()
    assert protocol.state is NEGOTIATING
    assert written(up) == SSL_REQUEST
    assert upstream.tls is None
    up.clear()
    upstream.dataReceived(b"S")
    assert upstream.tls is not None and not upstream.tls.done
    assert written(up)[:1] == b"\x16"  # the gateway's ClientHello
    assert protocol.state is NEGOTIATING
    Server().pump(upstream, up)
    assert upstream.tls.done
    assert protocol.state is RELAYING


def test_bytes_after_the_s_are_refused() -> None:
    """
    Anything after the upstream's ``S`` and before the TLS handshake is
    refused (CVE-2021-23222), in words with its first eight bytes
    (``upstream_negotiation`` mutants: ``end(None)``, no or ``None``
    termination or why, ``extra[:9]``).
    """
    h, protocol, down, upstream, up = offload()
    up.clear()
    upstream.dataReceived(b"S0123456789")
    assert down.disconnecting and up.disconnecting
    assert upstream.tls is None and written(up) == b""
    assert protocol.termination == "upstream sent data before TLS (b'01234567')"
    h.close(protocol)
    assert h.records[0].connection_termination_details == "postgres_upstream_refused_tls"


def test_terminated_without_starttls_originates_at_once() -> None:
    """
    A client's TLS terminated without STARTTLS: the upstream gets the
    gateway's ClientHello as soon as it is connected (``upstream_connected``
    mutant ``preamble is not None or self.tls is not None`` reads the
    missing preamble's request).
    """
    h = Harness(listener())
    protocol, down, client = handshaken(h, starttls=False)
    upstream, up = h.connect_upstream()
    assert protocol.state is CONNECTING
    assert upstream.tls is not None
    assert written(up)[:1] == b"\x16"
