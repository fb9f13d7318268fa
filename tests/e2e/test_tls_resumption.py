"""
Session resumption through termination: a client that kept the session of
its first connection resumes it on the next (TLS 1.3 tickets, TLS 1.2
tickets), the relay works the same, and a MUTUAL server's resumed
connection still carries the client's identity (access log). Real peers:
Python ``ssl`` clients, a plain TCP backend.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.e2e.test_tls_termination import (  # noqa: F401  (setup: the fixture)
    HOST_A,
    PORT,
    client_context,
    gateway_doc,
    mutual_docs,
    serial,
    setup,
    talk,
    tls_server,
    vs_tcp,
)
from tests.support.tlscerts import write_credential


def connect(port: int, ctx: ssl.SSLContext,
            session: Optional[ssl.SSLSession] = None) -> tuple[bytes, bool, Any, tuple[str, int]]:
    """Greeting, whether the session was resumed, the session, the local address."""
    got, facts, local = talk(port, ctx, HOST_A, b"ping", session)
    return got, bool(facts["reused"]), facts["session"], local


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_kept_session_is_resumed(setup: Any, version: ssl.TLSVersion) -> None:  # noqa: F811
    write_credential(setup.creds, "cred-a", setup.ca.issue(HOST_A, dns=[HOST_A]))
    setup.backend("backend-a", b"backend-a")
    docs = [gateway_doc([tls_server("tls-a", [HOST_A],
                                    {"mode": "SIMPLE", "credentialName": "cred-a"})]),
            vs_tcp("vs-a", [HOST_A], "backend-a")]
    ctx = client_context(setup.ca, maximum_version=version)
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        got, reused, session, _ = connect(port, ctx)
        assert got == b"backend-a" and not reused
        assert session is not None
        got, reused, _, local = connect(port, ctx, session)
        assert got == b"backend-a" and reused
        line = gw.wait_access_line_from(local)
    assert f"tls_version={'TLSv1.3' if version is ssl.TLSVersion.TLSv1_3 else 'TLSv1.2'}" in line


def test_a_resumed_mutual_session_keeps_the_client_identity(setup: Any,  # noqa: F811
                                                             tmp_path: Path) -> None:
    docs = mutual_docs(setup, tmp_path, "MUTUAL")
    good = setup.ca.issue("client-1", uris=["spiffe://test/client-1"], client=True)
    ctx = client_context(setup.ca, good, tmp_path)
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        _, reused, session, _ = connect(port, ctx)
        assert not reused
        got, reused, _, local = connect(port, ctx, session)
        assert got == b"backend-a" and reused
        line = gw.wait_access_line_from(local)
    assert 'peer_subject="CN=client-1"' in line and "tls_mode=MUTUAL" in line
    assert "peer_san=spiffe://test/client-1" in line


def test_no_resumption_across_a_rotation(setup: Any) -> None:  # noqa: F811
    """After a certificate rotation, a session from before takes a full handshake."""
    first = setup.ca.issue(HOST_A, dns=[HOST_A])
    second = setup.ca.issue(HOST_A, dns=[HOST_A])
    write_credential(setup.creds, "cred-a", first)
    setup.backend("backend-a", b"backend-a")
    docs = [gateway_doc([tls_server("tls-a", [HOST_A],
                                    {"mode": "SIMPLE", "credentialName": "cred-a"})]),
            vs_tcp("vs-a", [HOST_A], "backend-a")]
    ctx = client_context(setup.ca)
    with setup.gateway(docs, "--watch-interval", "0.2") as gw:
        port = gw.port(PORT)
        _, _, session, _ = connect(port, ctx)
        write_credential(setup.creds, "cred-a", second)
        deadline = time.monotonic() + 10
        while serial(port, ctx) != second.cert.serial_number:
            assert time.monotonic() < deadline, gw.text()
            time.sleep(0.1)
        got, reused, _, _ = connect(port, ctx, session)
    assert got == b"backend-a" and not reused

