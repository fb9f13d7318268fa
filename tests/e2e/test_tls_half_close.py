"""
TLS half-close through termination, as for plaintext routes: a client that
ends its side (close_notify, or only its TCP FIN) after its request still
gets the upstream's whole response, and the upstream's EOF reaches the
client as close_notify. Real peers: a Python ``ssl`` client over its own
socket (``SSLObject``, so it can keep reading after its close_notify) and a
plain TCP backend that answers only once it has seen the client's EOF.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from typing import Any

import pytest

from tests.e2e.test_tls_termination import (  # noqa: F401  (setup: the fixture)
    HOST_A,
    PORT,
    client_context,
    gateway_doc,
    setup,
    talk,
    tls_server,
    vs_tcp,
)
from tests.support.backends import pattern
from tests.support.gateway import GatewayProcess
from tests.support.tlscerts import write_credential

REPLY = 3 << 20  # larger than the socket buffers: the relay streams it


def answer_after_eof(conn: socket.socket) -> None:
    """Read the request until EOF, then answer its sha256 and REPLY bytes, then FIN."""
    digest, total = hashlib.sha256(), 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    conn.sendall(f"{digest.hexdigest()} {total}\n".encode())
    block = pattern(1 << 20)
    for _ in range(REPLY >> 20):
        conn.sendall(block)
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass


class TlsClient:
    """A TLS client on its own socket: half-closes either way, reads after."""

    def __init__(self, port: int, ctx: ssl.SSLContext, sni: str,
                 send_finished: bool = True) -> None:
        """Handshake; with ``send_finished=False`` the last flight stays in ``outgoing``."""
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=sni)
        for _ in range(100):  # bounded: a handshake is a few round trips
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                assert self.feed(), "closed during the handshake"
        if send_finished:
            self.flush()

    def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.raw.sendall(data)

    def feed(self) -> bool:
        chunk = self.raw.recv(65536)
        if not chunk:
            self.incoming.write_eof()
            return False
        self.incoming.write(chunk)
        return True

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.flush()

    def close_notify(self) -> None:
        try:
            self.tls.unwrap()  # sends close_notify; the peer's comes later
        except ssl.SSLWantReadError:
            pass
        self.flush()

    def read_all(self) -> tuple[bytes, str]:
        """Everything until the end, and how it ended: close_notify, eof or error."""
        got = bytearray()
        for _ in range(100_000):  # bounded: REPLY in chunks of at least a record
            try:
                chunk = self.tls.read(65536)
                if not chunk:  # CPython's answer to close_notify before we sent ours
                    return bytes(got), "close_notify"
                got += chunk
                continue
            except ssl.SSLWantReadError:
                if not self.feed():
                    return bytes(got), "eof"
            except ssl.SSLZeroReturnError:
                return bytes(got), "close_notify"
            except (ssl.SSLError, ConnectionResetError) as exc:
                return bytes(got), f"error {exc}"
        return bytes(got), "too many reads"

    def close(self) -> None:
        self.raw.close()


@pytest.mark.parametrize("how", ["close_notify", "fin"])
def test_client_half_close_gets_whole_response(setup: Any, how: str) -> None:  # noqa: F811
    write_credential(setup.creds, "cred-a", setup.ca.issue(HOST_A, dns=[HOST_A]))
    setup.backend("answer", b"", answer_after_eof)
    docs = [gateway_doc([tls_server("tls-a", [HOST_A],
                                    {"mode": "SIMPLE", "credentialName": "cred-a"})]),
            vs_tcp("vs-a", [HOST_A], "answer")]
    request = pattern(1 << 20)[:300_000]
    with setup.gateway(docs) as gw:
        client = TlsClient(gw.port(PORT), client_context(setup.ca), HOST_A)
        try:
            client.send(request)
            if how == "close_notify":
                client.close_notify()  # TLS's end of data, then the TCP FIN
            client.raw.shutdown(socket.SHUT_WR)
            got, ending = client.read_all()
        finally:
            client.close()
    head, _, body = got.partition(b"\n")
    assert head.decode().split() == [hashlib.sha256(request).hexdigest(), str(len(request))]
    assert len(body) == REPLY
    assert body == pattern(1 << 20) * (REPLY >> 20)
    # The upstream's FIN reached the client as TLS's end of data.
    assert ending == "close_notify"


def test_twisted_tls_layer_fallback_relays(setup: Any) -> None:  # noqa: F811
    """
    TSGATE_TLS=twisted (Twisted's TLSMemoryBIOProtocol, the fallback) still
    terminates and relays; it has no half-close (a client's close_notify or
    FIN ends the connection: docs/tls.md).
    """
    write_credential(setup.creds, "cred-a", setup.ca.issue(HOST_A, dns=[HOST_A]))
    setup.backend("echo-a", b"backend-a")
    docs = [gateway_doc([tls_server("tls-a", [HOST_A],
                                    {"mode": "SIMPLE", "credentialName": "cred-a"})]),
            vs_tcp("vs-a", [HOST_A], "echo-a")]
    with GatewayProcess([str(setup.config(docs))], [PORT],
                        extra=["--credentials", str(setup.creds)],
                        env={"TSGATE_TLS": "twisted"}) as gw:
        greeting, facts, _ = talk(gw.port(PORT), client_context(setup.ca), HOST_A,
                                  pattern(100_000))
    assert greeting == b"backend-a"
    assert facts["version"] == "TLSv1.3"
