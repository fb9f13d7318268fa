"""
A client's TLS terminated by the gateway, through the whole pipeline on the
unit-test harness: a real handshake (Python's ssl on memory BIOs against the
gateway's TLS layer over a string transport), then the relay and the
half-close, which for a TLS client is a close_notify before the FIN. Each
test states the planted bug (a mutant of docs/mutation-report.md, "data
path") it catches.
"""

from __future__ import annotations

import ssl
from typing import Any

import attrs
import pytest
from OpenSSL import SSL

from tests.support.proxy import Harness, route
from tests.support.tlscerts import CA
from tsgate.proxy.stages import Ending, Stages
from tsgate.proxy.state import RELAYING
from tsgate.routing import Listener, SniChain
from tsgate.tls import stage as tls_stage
from tsgate.tls.server import ServerConnectionCreator
from tsgate.tls.transport import TlsLayer

NAME = "a.example.test"
#: Twisted's TLS layer sends small writes at the next turn of the global
#: reactor (which these tests do not run); writes of this size go at once.
BIG = 64_001


@attrs.frozen
class Termination:
    """What the data path reads of a ``tsgate.tls.server.Termination``."""

    mode: str
    creator: Any


def terminating_listener() -> Listener:
    """A listener whose one chain terminates TLS with a fresh certificate for NAME."""
    leaf = CA.create().issue(NAME, dns=[NAME])
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate(leaf.cert)
    context.use_privatekey(leaf.key)
    termination = Termination("SIMPLE", ServerConnectionCreator(context))
    return Listener(bind="0.0.0.0", port=31400, tls_chains=(
        SniChain((NAME,), route("default/a#tls[0]"), termination=termination),))


class Client:
    """A TLS client on memory BIOs; ``pump`` moves bytes between it and the gateway."""

    def __init__(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=NAME)
        self.closed = False
        self.handshake()

    def handshake(self) -> bool:
        try:
            self.tls.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def pump(self, protocol: Any, down: Any) -> None:
        """Gateway -> client, then client -> gateway, until neither has anything."""
        for _ in range(10):
            sent = bytes(down.value())
            down.clear()
            if sent:
                self.incoming.write(sent)
            self.handshake()
            out = self.outgoing.read()
            if out:
                down.protocol.dataReceived(out)  # the socket delivers to the TLS layer
            if not sent and not out:
                return

    def send(self, protocol: Any, down: Any, data: bytes) -> None:
        self.tls.write(data)
        self.pump(protocol, down)

    def read(self) -> bytes:
        """The plaintext received so far; ``closed`` once the server's close_notify came."""
        got = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return got
            if not chunk:  # what SSLObject.read returns after a close_notify
                self.closed = True
                return got
            got += chunk


def handshaken(h: Harness) -> tuple[Any, Any, Client]:
    protocol, down = h.accept()
    client = Client()
    protocol.dataReceived(client.outgoing.read())  # the ClientHello, inspected first
    client.pump(protocol, down)
    return protocol, down, client


def test_handshake_then_connect_then_relay_both_ways() -> None:
    """
    The handshake completes before anything is connected; the plaintext is
    relayed both ways and counted; the record carries the TLS facts.
    """
    h = Harness(terminating_listener())
    protocol, down, client = handshaken(h)
    assert client.handshake()
    assert protocol.tls is not None and protocol.tls.done
    assert len(h.reactor.tcpClients) == 1
    upstream, up = h.connect_upstream()
    assert protocol.state is RELAYING
    client.send(protocol, down, b"request")
    assert bytes(up.io.getvalue()) == b"request"
    reply = b"r" * BIG
    upstream.dataReceived(reply)
    client.pump(protocol, down)
    assert client.read() == reply
    assert not client.closed
    assert (protocol.bytes_received, protocol.bytes_sent) == (7, BIG)
    h.close(protocol)
    record = h.records[0]
    assert record.requested_server_name == NAME
    assert record.hints is not None and record.hints["tls_mode"] == "SIMPLE"
    assert record.hints["tls_version"].startswith("TLSv1.")


def test_upstream_fin_is_a_close_notify_then_a_fin_to_the_client() -> None:
    """
    The upstream's FIN reaches a TLS client as close_notify followed by the
    TCP FIN, after the data (planted: the TLS layer not recognised, so no
    close_notify, or shut without its transport).
    """
    h = Harness(terminating_listener())
    protocol, down, client = handshaken(h)
    upstream, up = h.connect_upstream()
    last = b"w" * BIG
    upstream.dataReceived(last)
    upstream.readConnectionLost()
    assert down.write_closed
    assert not down.disconnecting  # the client may still talk (TLS 1.3 half-close)
    client.pump(protocol, down)
    assert client.read() == last
    assert client.closed


def test_client_gone_during_the_handshake() -> None:
    """
    The client leaves after its ClientHello: the record says the handshake
    failed, in Envoy's words, and why (planted: the TLS failure not
    reported, or reported over a reason already set).
    """
    h = Harness(terminating_listener())
    protocol, down = h.accept()
    client = Client()
    protocol.dataReceived(client.outgoing.read())
    assert protocol.tls is not None and not protocol.tls.done
    h.close(protocol)
    assert protocol.termination == "TLS handshake failed"
    record = h.records[0]
    assert record.connection_termination_details == "downstream_tls_handshake_failed"
    assert record.hints is not None
    reason = record.hints["downstream_transport_failure_reason"]
    assert "closed_cleanly" in reason, reason  # the close's own reason (ConnectionDone)
    assert h.reactor.tcpClients == []


def test_a_verdict_after_the_handshake_closes_the_socket_at_once() -> None:
    """
    A decision check refuses the client after its handshake: the socket
    under the TLS layer is closed now, not after a close_notify the client
    would never send (planted: only the TLS layer closed).
    """
    def deny(conn: Any, decision: Any) -> Ending:
        return Ending("UAEX", "rbac_access_denied")

    h = Harness(terminating_listener(), [lambda listener: Stages(decision=(deny,))])
    protocol, down, client = handshaken(h)
    assert protocol.tls is not None and protocol.tls.done
    assert down.disconnecting
    assert h.reactor.tcpClients == []


def test_upstream_fin_is_a_close_notify_with_twisteds_tls_layer_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    With ``TSGATE_TLS=twisted`` (Twisted's ``TLSMemoryBIOProtocol``, which has
    no ``loseWriteConnection`` of its own) the upstream's FIN still reaches
    the client as close_notify then FIN (mutants of ``RelayStage._forward_eof``:
    ``type(transport) is LeanTransport and …`` or ``is_tls(None)`` shut the
    socket under the TLS layer with no close_notify).
    """
    monkeypatch.setattr(tls_stage, "LEAN", False)
    h = Harness(terminating_listener())
    protocol, down, client = handshaken(h)
    assert tls_stage.is_tls(protocol.transport) and type(protocol.transport) is not TlsLayer
    upstream, up = h.connect_upstream()
    last = b"w" * BIG
    upstream.dataReceived(last)
    upstream.readConnectionLost()
    assert down.write_closed
    client.pump(protocol, down)
    assert client.read() == last
    assert client.closed


def hold_finished(client: Client, down: Any) -> None:
    """Handshake until the client's Finished is ready (held, not sent)."""
    for _ in range(10):  # bounded: a handshake is a few flights
        client.incoming.write(bytes(down.value()))
        down.clear()
        if client.handshake():
            return
        down.protocol.dataReceived(client.outgoing.read())
    raise AssertionError("no handshake")


def test_close_notify_with_the_finished_dials_nothing() -> None:
    """
    The client's close_notify arrives with its Finished, nothing sent: no
    upstream connection, the client closed, the record says why (planted:
    the peek skipped, or the connection left open).
    """
    h = Harness(terminating_listener())
    protocol, down_ = h.accept()
    down: Any = down_
    client = Client()
    protocol.dataReceived(client.outgoing.read())  # the ClientHello
    hold_finished(client, down)
    try:
        client.tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    down.protocol.dataReceived(client.outgoing.read())  # Finished + close_notify
    assert protocol.tls is not None and protocol.tls.done
    assert h.reactor.tcpClients == []
    assert down.disconnecting
    h.close(protocol)
    record = h.records[0]
    assert record.connection_termination_details == "downstream_closed_after_handshake"
    assert record.upstream_cluster == "-"


def test_data_with_the_finished_is_connected_and_relayed() -> None:
    """Application data with the Finished: the upstream is dialed and gets it."""
    h = Harness(terminating_listener())
    protocol, down_ = h.accept()
    down: Any = down_
    client = Client()
    protocol.dataReceived(client.outgoing.read())
    hold_finished(client, down)
    client.tls.write(b"first words")
    down.protocol.dataReceived(client.outgoing.read())  # Finished + data
    assert len(h.reactor.tcpClients) == 1
    upstream, up = h.connect_upstream()
    assert bytes(up.value()) == b"first words"  # type: ignore[no-untyped-call]
