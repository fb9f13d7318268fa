"""
A terminated client that ends its side together with its handshake (its
close_notify, FIN or reset arrives with its Finished, before any application
data) gets no upstream connection, as with HAProxy: certificate checks and
TLS probes do not reach the backend. A client that half-closes once the
handshake has settled is a half-close as for plaintext routes: the upstream
is dialed and its answer reaches the client (server-first protocols).

Real peers: a Python ``ssl`` client on memory BIOs over its own socket (so
its Finished and its close can leave in one segment), a plain TCP backend
that counts its connections.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from typing import Any

import pytest

from tests.e2e.test_tls_half_close import TlsClient, answer_after_eof
from tests.e2e.test_tls_termination import (  # noqa: F401  (setup: the fixture)
    HOST_A,
    PORT,
    client_context,
    gateway_doc,
    setup,
    tls_server,
    vs_tcp,
)
from tests.support.tlscerts import write_credential

DETAIL = "downstream_closed_after_handshake"


class CountingBackend:
    """Counts the connections it accepted; each is handled by ``answer_after_eof``."""

    def __init__(self) -> None:
        self.accepted = 0
        self.lock = threading.Lock()

    def __call__(self, conn: socket.socket) -> None:
        with self.lock:
            self.accepted += 1
        answer_after_eof(conn)


class Client(TlsClient):
    """A TLS client that holds back its Finished, to send it with what follows."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        super().__init__(port, ctx, HOST_A, send_finished=False)

    def close_notify(self) -> None:
        """close_notify into ``outgoing`` (sent by :meth:`send_held`)."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass

    def send_held(self, fin: bool = False) -> None:
        """Send what is held in one segment (with the FIN when ``fin``)."""
        if fin:
            self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        self.flush()
        if fin:
            self.raw.shutdown(socket.SHUT_WR)  # the FIN rides on the corked segment

    def local(self) -> tuple[str, int]:
        return self.raw.getsockname()  # type: ignore[no-any-return]


def terminated(setup: Any, backend: CountingBackend) -> list[dict[str, Any]]:  # noqa: F811
    write_credential(setup.creds, "cred-a", setup.ca.issue(HOST_A, dns=[HOST_A]))
    setup.backend("answer", b"", backend)
    return [gateway_doc([tls_server("tls-a", [HOST_A],
                                    {"mode": "SIMPLE", "credentialName": "cred-a"})]),
            vs_tcp("vs-a", [HOST_A], "answer")]


def wait_accepted(backend: CountingBackend, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while backend.accepted < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.accepted >= count


@pytest.mark.parametrize("how", ["close_notify", "fin", "close_notify_and_fin"])
def test_client_closing_with_its_finished_gets_no_upstream(setup: Any,  # noqa: F811
                                                           how: str) -> None:
    backend = CountingBackend()
    with setup.gateway(terminated(setup, backend)) as gw:
        client = Client(gw.port(PORT), client_context(setup.ca))
        try:
            if how != "fin":
                client.close_notify()
            client.send_held(fin=how != "close_notify")
            local = client.local()
            got, ending = client.read_all()
        finally:
            client.close()
        line = gw.wait_access_line_from(local)
        # a connection that works still dials: the backend is reachable
        control = Client(gw.port(PORT), client_context(setup.ca))
        try:
            control.send_held()  # the Finished alone: the upstream is dialed
            wait_accepted(backend, 1)
            control.close_notify()  # then a half-close: the answer still comes
            control.send_held(fin=True)
            answer, _ = control.read_all()
        finally:
            control.close()
    assert got == b""
    assert ending in ("close_notify", "eof") or ending.startswith("error")
    assert DETAIL in line, line
    assert "outbound|9000||answer" not in line  # no cluster picked, nothing dialed
    # only the control connection reached the backend
    assert backend.accepted == 1
    assert answer.startswith(hashlib.sha256(b"").hexdigest().encode() + b" 0\n")


def test_half_close_after_the_handshake_still_gets_the_answer(setup: Any) -> None:  # noqa: F811
    """Nothing sent, FIN once the upstream is connected: the backend's answer arrives."""
    backend = CountingBackend()
    with setup.gateway(terminated(setup, backend)) as gw:
        client = Client(gw.port(PORT), client_context(setup.ca))
        try:
            client.send_held()
            wait_accepted(backend, 1)
            client.raw.shutdown(socket.SHUT_WR)
            got, ending = client.read_all()
            local = client.local()
        finally:
            client.close()
        line = gw.wait_access_line_from(local)
    head, _, body = got.partition(b"\n")
    assert head == hashlib.sha256(b"").hexdigest().encode() + b" 0"
    assert len(body) == 3 << 20
    assert ending == "close_notify"
    assert DETAIL not in line


def test_data_and_close_with_the_finished_are_relayed(setup: Any) -> None:  # noqa: F811
    """Finished, a request and close_notify in one segment: dialed, relayed, answered."""
    backend = CountingBackend()
    request = b"request bytes " * 100
    with setup.gateway(terminated(setup, backend)) as gw:
        client = Client(gw.port(PORT), client_context(setup.ca))
        try:
            client.tls.write(request)
            client.close_notify()
            client.send_held(fin=True)
            got, ending = client.read_all()
        finally:
            client.close()
    head, _, body = got.partition(b"\n")
    assert head == f"{hashlib.sha256(request).hexdigest()} {len(request)}".encode()
    assert len(body) == 3 << 20
    assert ending == "close_notify"
    assert backend.accepted == 1
