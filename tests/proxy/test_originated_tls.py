"""
TLS originated by the gateway to the upstream, through the connect stage on
the unit-test harness: a real handshake between the gateway's TLS layer
(over a string transport) and a pyOpenSSL server on memory BIOs. The relay
starts only after the handshake; an upstream gone before it is ``UF``. Each
test states the planted bug (a mutant of docs/mutation-report.md, "data
path") it catches.
"""

from __future__ import annotations

from typing import Any

import attrs
from OpenSSL import SSL
from twisted.internet import error as ierror
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.support.proxy import Harness, cluster, route
from tests.support.tlscerts import CA
from tsgate.proxy.state import CONNECTING, RELAYING
from tsgate.routing import Listener


@implementer(IOpenSSLClientConnectionCreator)
class ClientCreator:
    """A client connection creator that verifies nothing (the test's server is ours)."""

    def __init__(self) -> None:
        self.context = SSL.Context(SSL.TLS_METHOD)

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:  # noqa: N802
        conn = SSL.Connection(self.context, None)
        conn.set_app_data(tls_protocol)
        conn.set_connect_state()
        return conn


@attrs.frozen
class Origination:
    """What the data path reads of a ``tsgate.tls.client.Origination``."""

    creator: Any


class Server:
    """The upstream's TLS on memory BIOs."""

    def __init__(self) -> None:
        leaf = CA.create().issue("upstream.test", dns=["upstream.test"])
        context = SSL.Context(SSL.TLS_METHOD)
        context.use_certificate(leaf.cert)
        context.use_privatekey(leaf.key)
        self.tls = SSL.Connection(context, None)
        self.tls.set_accept_state()

    def pump(self, upstream: Any, up: Any) -> None:
        """Gateway -> server, then server -> gateway, until neither has anything."""
        for _ in range(10):
            sent = bytes(up.value())
            up.clear()
            if sent:
                self.tls.bio_write(sent)
            try:
                self.tls.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                out = self.tls.bio_read(65536)
            except SSL.WantReadError:
                out = b""
            if out:
                up.protocol.dataReceived(out)  # the socket delivers to the TLS layer
            if not sent and not out:
                return


def originating() -> tuple[Harness, Any]:
    upstream_cluster = cluster(tls=Origination(ClientCreator()))
    h = Harness(Listener(bind="0.0.0.0", port=31400, tcp_route=route(cluster=upstream_cluster)))
    return h, upstream_cluster


def test_relay_starts_after_the_upstream_handshake() -> None:
    """
    Connected, the upstream socket gets the gateway's ClientHello first; the
    relay starts once the handshake is done, whose facts reach the access
    log (planted: origination skipped, started without the connection or
    the upstream, the handshake's end not reported).
    """
    h, upstream_cluster = originating()
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    assert protocol.state is CONNECTING
    assert upstream.tls is not None and not upstream.tls.done
    assert bytes(up.io.getvalue())[:1] == b"\x16"  # a TLS handshake record: the ClientHello
    Server().pump(upstream, up)
    assert upstream.tls.done
    assert protocol.state is RELAYING
    assert h.ctx.stats.get("cluster.ssl.handshake", cluster=upstream_cluster.name) == 1
    h.close(protocol)
    hints = h.records[0].hints
    assert hints is not None and hints["upstream_tls_version"].startswith("TLSv1.")


def test_upstream_gone_during_the_handshake_is_uf() -> None:
    """
    The upstream closes before the handshake completes: UF, its reason in
    the record and the errors, the client closed (planted: treated as a
    plain close after relaying, the reason lost).
    """
    h, upstream_cluster = originating()
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    upstream.connectionLost(Failure(ierror.ConnectionLost("reset by peer")))
    assert down.disconnecting
    assert protocol.termination == "upstream TLS handshake failed"
    assert h.ctx.stats.get("cluster.upstream_cx_connect_fail", cluster=upstream_cluster.name) == 1
    h.close(protocol)
    record = h.records[0]
    assert record.response_flags == "UF"
    reason = record.upstream_transport_failure_reason
    assert reason.startswith("TLS_error:|") and "reset_by_peer" in reason, reason
    assert "upstream TLS failed" in h.ctx.recent_errors[-1][1]


def test_upstream_gone_after_the_handshake_is_a_plain_close() -> None:
    """After a completed handshake the upstream's close is an ordinary end, no UF."""
    h, upstream_cluster = originating()
    protocol, down = h.accept()
    upstream, up = h.connect_upstream()
    Server().pump(upstream, up)
    upstream.connectionLost(Failure(ierror.ConnectionDone()))
    assert down.disconnecting
    h.close(protocol)
    assert h.records[0].response_flags == "-"
    assert h.ctx.stats.get("cluster.upstream_cx_connect_fail", cluster=upstream_cluster.name) == 0
