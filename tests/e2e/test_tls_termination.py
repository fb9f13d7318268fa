"""
TLS termination at the gateway, end to end: ``twistd tsgate`` with real
certificates (generated now), real clients (Python ssl, openssl s_client,
curl) and plaintext backends behind ``tcp`` routes.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from tests.support.backends import ThreadedServer, echo
from tests.support.gateway import GatewayProcess
from tests.support.tlscerts import CA, Leaf, write_credential, write_secret_volume

PORT = 8443
HOST_A = "a.example.test"
HOST_B = "b.example.test"
HOST_P = "p.example.test"  # passthrough


def gateway_doc(servers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw"},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}}


def tls_server(name: str, hosts: list[str], tls: dict[str, Any],
               protocol: str = "TLS") -> dict[str, Any]:
    return {"port": {"number": PORT, "name": name, "protocol": protocol}, "hosts": hosts,
            "tls": tls}


def vs_tcp(name: str, hosts: list[str], backend: str, port: int = PORT) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": hosts, "gateways": ["gw"],
                     "tcp": [{"match": [{"port": port}],
                              "route": [{"destination": {"host": backend,
                                                         "port": {"number": 9000}}}]}]}}


def vs_tls(name: str, sni: str, backend: str) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": [sni], "gateways": ["gw"],
                     "tls": [{"match": [{"port": PORT, "sniHosts": [sni]}],
                              "route": [{"destination": {"host": backend,
                                                         "port": {"number": 9000}}}]}]}}


def service_entry(host: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": host.replace(".", "-")},
            "spec": {"hosts": [host], "location": "MESH_INTERNAL", "resolution": "STATIC",
                     "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP",
                                "targetPort": port}],
                     "endpoints": [{"address": "127.0.0.1"}]}}


def tagged_echo(tag: bytes) -> Any:
    """A backend that greets with its tag, then echoes."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(tag + b"\n")
        echo(conn)

    return handler


def client_context(ca: CA, cert: Optional[Leaf] = None, tmp: Optional[Path] = None,
                   **kw: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.pem().decode())
    if cert is not None:
        assert tmp is not None
        c, k = cert.write(tmp / "client.crt", tmp / "client.key")
        ctx.load_cert_chain(c, k)
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


def talk(port: int, ctx: ssl.SSLContext, sni: str, payload: bytes = b"hello",
         session: Optional[ssl.SSLSession] = None) -> \
        tuple[bytes, dict[str, Any], tuple[str, int]]:
    """
    Connect with TLS (resuming ``session`` if given), read the greeting, send
    and read back an echo. The facts include the session (TLS 1.3 tickets
    have come by then) and whether it was resumed.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        local = raw.getsockname()
        with ctx.wrap_socket(raw, server_hostname=sni, session=session) as s:
            facts = {"version": s.version(), "peer": s.getpeercert()}
            got = b""
            while not got.endswith(b"\n"):
                chunk = s.recv(100)
                if not chunk:
                    break
                got += chunk
            s.sendall(payload)
            back = b""
            while len(back) < len(payload):
                chunk = s.recv(100)
                if not chunk:
                    break
                back += chunk
            assert back == payload
            facts["session"], facts["reused"] = s.session, s.session_reused
            return got.strip(), facts, local


def serial(port: int, ctx: ssl.SSLContext, sni: str = HOST_A) -> int:
    """The serial number of the certificate the gateway serves for ``sni``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    from cryptography import x509
    return x509.load_der_x509_certificate(der).serial_number


def peer_cn(facts: dict[str, Any]) -> str:
    for rdn in facts["peer"]["subject"]:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    servers = []

    class Setup:
        ca = CA.create()
        creds = tmp_path / "creds"
        backends: dict[str, int] = {}

        def backend(self, host: str, tag: bytes, handler: Any = None) -> None:
            server = ThreadedServer(handler or tagged_echo(tag))
            servers.append(server)
            self.backends[host] = server.port

        def config(self, docs: list[dict[str, Any]]) -> Path:
            path = tmp_path / "config.yaml"
            extra = [service_entry(h, p) for h, p in self.backends.items()]
            path.write_text(yaml.safe_dump_all(docs + extra))
            return path

        def gateway(self, docs: list[dict[str, Any]], *extra: str) -> GatewayProcess:
            return GatewayProcess([str(self.config(docs))], [PORT],
                                  extra=["--credentials", str(self.creds), *extra])

    s = Setup()
    s.creds.mkdir()
    yield s
    for server in servers:
        server.close()


def two_terminated_and_passthrough(s: Any, tmp: Path) -> list[dict[str, Any]]:
    """A and B terminated (B by files, A by credentialName), P passed through."""
    write_credential(s.creds, "cred-a", s.ca.issue(HOST_A, dns=[HOST_A]))
    b = s.ca.issue(HOST_B, dns=[HOST_B], kind="rsa")
    b_crt, b_key = b.write(tmp / "b.crt", tmp / "b.key")
    s.backend("backend-a", b"backend-a")
    s.backend("backend-b", b"backend-b")
    # The passthrough backend terminates TLS itself with its own certificate.
    p_leaf = s.ca.issue(HOST_P, dns=[HOST_P])
    p_crt, p_key = p_leaf.write(tmp / "p.crt", tmp / "p.key")
    p_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    p_ctx.load_cert_chain(p_crt, p_key)

    def passthrough_backend(conn: socket.socket) -> None:
        with p_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"backend-p\n")
            while True:
                data = tls.recv(65536)
                if not data:
                    break
                tls.sendall(data)

    s.backend("backend-p", b"", passthrough_backend)
    return [
        gateway_doc([
            tls_server("tls-a", [HOST_A], {"mode": "SIMPLE", "credentialName": "cred-a"}),
            tls_server("tls-b", [HOST_B], {"mode": "SIMPLE", "serverCertificate": str(b_crt),
                                           "privateKey": str(b_key)}),
            tls_server("tls-p", [HOST_P], {"mode": "PASSTHROUGH"}),
        ]),
        vs_tcp("vs-a", [HOST_A], "backend-a"),
        vs_tcp("vs-b", [HOST_B], "backend-b"),
        vs_tls("vs-p", HOST_P, "backend-p"),
    ]


def test_simple_termination_chooses_certificate_by_sni_beside_passthrough(
        setup: Any, tmp_path: Path) -> None:
    docs = two_terminated_and_passthrough(setup, tmp_path)
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        ctx = client_context(setup.ca)
        got, facts, local_a = talk(port, ctx, HOST_A)
        assert got == b"backend-a" and peer_cn(facts) == HOST_A
        got, facts, _ = talk(port, ctx, HOST_B)
        assert got == b"backend-b" and peer_cn(facts) == HOST_B
        # passthrough: the backend's own TLS session, its own certificate
        got, facts, _ = talk(port, ctx, HOST_P)
        assert got == b"backend-p" and peer_cn(facts) == HOST_P
        line = gw.wait_access_line_from(local_a)
        assert f" {HOST_A} " in line
        assert " outbound|9000||backend-a.default.svc.cluster.local " in line
        assert "tls_version=TLSv1.3" in line and "tls_mode=SIMPLE" in line
        assert "default/vs-a#tcp[0]" in line


def test_openssl_s_client_and_curl_see_the_served_certificate(setup: Any,
                                                               tmp_path: Path) -> None:
    docs = two_terminated_and_passthrough(setup, tmp_path)
    ca_file = setup.ca.write(tmp_path / "ca.pem")
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST_B,
             "-CAfile", str(ca_file), "-verify_return_error", "-verify_hostname", HOST_B],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdin is not None and proc.stdout is not None
        lines: list[str] = []
        try:
            for raw in proc.stdout:
                lines.append(raw.decode(errors="replace"))
                if lines[-1].strip() == "backend-b":
                    proc.stdin.write(b"ping\n")
                    proc.stdin.flush()
                if lines[-1].strip() == "ping":
                    break
        finally:
            proc.kill()
            proc.wait()
        text = "".join(lines)
        assert "Verify return code: 0 (ok)" in text, text
        assert f"CN = {HOST_B}" in text
        assert lines[-1].strip() == "ping", text
        if shutil.which("curl"):
            # curl speaks HTTP; the echo backend sends its tag then echoes the
            # request: curl sees the TLS session to the right certificate.
            out = subprocess.run(
                ["curl", "-sv", "--max-time", "5", "--cacert", str(ca_file),
                 "--resolve", f"{HOST_A}:{port}:127.0.0.1", f"https://{HOST_A}:{port}/"],
                capture_output=True, timeout=20)
            err = out.stderr.decode(errors="replace")
            assert "SSL certificate verify ok" in err, err
            assert f"CN={HOST_A}" in err.replace(" ", "")


def test_unknown_sni_and_bad_client_are_closed_and_counted(setup: Any,
                                                          tmp_path: Path) -> None:
    docs = two_terminated_and_passthrough(setup, tmp_path)
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        ctx = client_context(setup.ca)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, ctx, "other.example.test")
        # A client that trusts another CA refuses the gateway's certificate.
        other = client_context(CA.create("other CA"))
        with pytest.raises(ssl.SSLCertVerificationError):
            talk(port, other, HOST_A)
        # The gateway keeps serving.
        got, _, _ = talk(port, ctx, HOST_A)
        assert got == b"backend-a"


def mutual_docs(s: Any, tmp: Path, mode: str, **extra: Any) -> list[dict[str, Any]]:
    write_credential(s.creds, "cred-m", s.ca.issue(HOST_A, dns=[HOST_A]), ca=s.ca,
                     separate_ca=True)
    s.backend("backend-a", b"backend-a")
    tls = {"mode": mode, "credentialName": "cred-m", **extra}
    return [gateway_doc([tls_server("tls-m", [HOST_A], tls)]),
            vs_tcp("vs-a", [HOST_A], "backend-a")]


def test_mutual_requires_a_client_certificate_from_the_ca(setup: Any, tmp_path: Path) -> None:
    docs = mutual_docs(setup, tmp_path, "MUTUAL")
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        good = setup.ca.issue("client-1", uris=["spiffe://test/client-1"], client=True)
        got, _, local = talk(port, client_context(setup.ca, good, tmp_path), HOST_A)
        assert got == b"backend-a"
        line = gw.wait_access_line_from(local)
        assert 'peer_subject="CN=client-1"' in line and "tls_mode=MUTUAL" in line
        assert "peer_san=spiffe://test/client-1" in line
        # no certificate: refused (TLS 1.3 reports it at the first read)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, client_context(setup.ca), HOST_A)
        # a certificate from another CA: refused
        stranger = CA.create("stranger").issue("client-x", client=True)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, client_context(setup.ca, stranger, tmp_path), HOST_A)


def test_optional_mutual_accepts_no_certificate_but_verifies_one(setup: Any,
                                                                tmp_path: Path) -> None:
    docs = mutual_docs(setup, tmp_path, "OPTIONAL_MUTUAL")
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        got, _, _ = talk(port, client_context(setup.ca), HOST_A)
        assert got == b"backend-a"
        good = setup.ca.issue("client-1", client=True)
        got, _, _ = talk(port, client_context(setup.ca, good, tmp_path), HOST_A)
        assert got == b"backend-a"
        stranger = CA.create("stranger").issue("client-x", client=True)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, client_context(setup.ca, stranger, tmp_path), HOST_A)


def test_mutual_subject_alt_names_and_pins(setup: Any, tmp_path: Path) -> None:
    from tsgate.tls.server import cert_hash, spki_pin

    pinned = setup.ca.issue("client-2", uris=["spiffe://test/client-2"], client=True)
    docs = mutual_docs(setup, tmp_path, "MUTUAL",
                       subjectAltNames=["spiffe://test/client-1", "spiffe://test/client-2"],
                       verifyCertificateSpki=[spki_pin(pinned.cert)])
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        got, _, _ = talk(port, client_context(setup.ca, pinned, tmp_path), HOST_A)
        assert got == b"backend-a"
        wrong_san = setup.ca.issue("client-3", uris=["spiffe://test/client-3"], client=True)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, client_context(setup.ca, wrong_san, tmp_path), HOST_A)
        # right SAN, not pinned
        unpinned = setup.ca.issue("client-1", uris=["spiffe://test/client-1"], client=True)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, client_context(setup.ca, unpinned, tmp_path), HOST_A)
    # verifyCertificateHash: hex SHA-256 of the certificate, colons allowed
    hashed = setup.ca.issue("client-h", client=True)
    digest = cert_hash(hashed.cert).upper()
    colons = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
    docs = mutual_docs(setup, tmp_path, "MUTUAL", verifyCertificateHash=[colons])
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        got, _, _ = talk(port, client_context(setup.ca, hashed, tmp_path), HOST_A)
        assert got == b"backend-a"
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, client_context(setup.ca, pinned, tmp_path), HOST_A)


def test_protocol_versions_and_cipher_suites(setup: Any, tmp_path: Path) -> None:
    write_credential(setup.creds, "cred-a", setup.ca.issue(HOST_A, dns=[HOST_A], kind="rsa"))
    setup.backend("backend-a", b"backend-a")
    docs = [gateway_doc([tls_server("tls-a", [HOST_A], {
        "mode": "SIMPLE", "credentialName": "cred-a", "minProtocolVersion": "TLSV1_2",
        "maxProtocolVersion": "TLSV1_2", "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"]})]),
        vs_tcp("vs-a", [HOST_A], "backend-a")]
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        ctx = client_context(setup.ca)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST_A) as s:
            assert s.version() == "TLSv1.2"
            assert s.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
        only13 = client_context(setup.ca, minimum_version=ssl.TLSVersion.TLSv1_3)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, only13, HOST_A)
        other_cipher = client_context(setup.ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        other_cipher.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384")
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, other_cipher, HOST_A)


def test_rotation_through_a_secret_volume_data_swap(setup: Any, tmp_path: Path) -> None:
    first = setup.ca.issue(HOST_A, dns=[HOST_A])
    second = setup.ca.issue(HOST_A, dns=[HOST_A])
    from tests.support.tlscerts import cert_pem, key_pem

    secret = setup.creds / "cred-a"
    write_secret_volume(secret, {"tls.crt": cert_pem(first.cert), "tls.key": key_pem(first.key)},
                        1)
    setup.backend("backend-a", b"backend-a")
    docs = [gateway_doc([tls_server("tls-a", [HOST_A],
                                    {"mode": "SIMPLE", "credentialName": "cred-a"})]),
            vs_tcp("vs-a", [HOST_A], "backend-a")]
    with setup.gateway(docs, "--watch-interval", "0.2") as gw:
        port = gw.port(PORT)
        ctx = client_context(setup.ca)
        assert serial(port, ctx) == first.cert.serial_number
        # An open connection survives the rotation untouched.
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        held = ctx.wrap_socket(raw, server_hostname=HOST_A)
        assert held.recv(100) == b"backend-a\n"
        write_secret_volume(secret, {"tls.crt": cert_pem(second.cert),
                                     "tls.key": key_pem(second.key)}, 2)
        deadline = time.monotonic() + 10
        while serial(port, ctx) != second.cert.serial_number:
            assert time.monotonic() < deadline, gw.text()
            time.sleep(0.1)
        held.sendall(b"still here")
        assert held.recv(100) == b"still here"
        # A mismatched key is rejected: the running certificate stays.
        write_secret_volume(secret, {"tls.crt": cert_pem(first.cert),
                                     "tls.key": key_pem(second.key)}, 3)
        deadline = time.monotonic() + 10
        while "does not match the certificate" not in gw.text():
            assert time.monotonic() < deadline, gw.text()
            time.sleep(0.1)
        assert serial(port, ctx) == second.cert.serial_number
        held.close()


def test_bad_key_is_a_startup_error_naming_the_field(setup: Any, tmp_path: Path) -> None:
    a = setup.ca.issue(HOST_A, dns=[HOST_A])
    other = setup.ca.issue(HOST_A, dns=[HOST_A])
    crt, _ = a.write(tmp_path / "a.crt", tmp_path / "a.key")
    _, wrong = other.write(tmp_path / "o.crt", tmp_path / "o.key")
    setup.backend("backend-a", b"backend-a")
    docs = [gateway_doc([tls_server("tls-a", [HOST_A], {
        "mode": "SIMPLE", "serverCertificate": str(crt), "privateKey": str(wrong)})]),
        vs_tcp("vs-a", [HOST_A], "backend-a")]
    path = setup.config(docs)
    from tests.e2e.test_gateway_process import run_twistd

    out = run_twistd(["--config", str(path), "--admin", "none", "--readiness", "none"])
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "spec.servers[0].tls.privateKey" in text
    assert "does not match the certificate" in text
    assert "tsgate listening" not in text


def admin_get(port: int, path: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def ssl_stats(admin: int) -> dict[str, float]:
    """``listener.<name>.ssl.X`` counters by ``ssl.X``, summed over listeners."""
    out: dict[str, float] = {}
    for line in admin_get(admin, "/stats?filter=ssl").splitlines():
        name, _, value = line.rpartition(": ")
        if ".ssl." in name and name.startswith("listener."):
            key = "ssl." + name.split(".ssl.", 1)[1]
            out[key] = out.get(key, 0) + float(value)
    return out


def test_ssl_counters_expiry_gauge_and_config_dump(setup: Any, tmp_path: Path) -> None:
    from tests.support.gateway import free_port
    from tsgate.tls.server import spki_pin

    pinned = setup.ca.issue("client-1", uris=["spiffe://test/client-1"], client=True)
    docs = mutual_docs(setup, tmp_path, "MUTUAL", subjectAltNames=["spiffe://test/client-1"],
                       verifyCertificateSpki=[spki_pin(pinned.cert)])
    admin = free_port()
    with setup.gateway(docs, "--admin", f"tcp:{admin}:interface=127.0.0.1") as gw:
        port = gw.port(PORT)
        talk(port, client_context(setup.ca, pinned, tmp_path), HOST_A)
        for client in (None,  # no certificate
                       CA.create("x").issue("client-1", client=True),  # unknown CA
                       setup.ca.issue("client-2", uris=["spiffe://test/client-2"],
                                      client=True),  # SAN not listed (and not pinned)
                       setup.ca.issue("client-1", uris=["spiffe://test/client-1"],
                                      client=True)):  # right SAN, not pinned
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                talk(port, client_context(setup.ca, client, tmp_path), HOST_A)
        deadline = time.monotonic() + 10
        want = {"ssl.handshake": 1, "ssl.connection_error": 4, "ssl.fail_verify_no_cert": 1,
                "ssl.fail_verify_error": 1, "ssl.fail_verify_cert_hash": 2}
        while True:
            found = ssl_stats(admin)
            if all(found.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert {k: found.get(k) for k in want} == want, found
        gauge = admin_get(admin, "/stats?filter=days_until_first_cert_expiring")
        days = float(gauge.strip().rpartition(": ")[2])
        assert 88 < days < 91
        dump = admin_get(admin, "/config_dump")
        assert "BEGIN" not in dump and "PRIVATE" not in dump
        assert "spiffe://test/client-1" in dump and HOST_A in dump


def test_validate_warns_about_names_expiry_and_shared_certificates(setup: Any,
                                                                   tmp_path: Path) -> None:
    """`tsgate validate --credentials`: warnings, not errors."""
    write_credential(setup.creds, "cred-a", setup.ca.issue(
        HOST_A, dns=[HOST_A, HOST_P], days=10))
    setup.backend("backend-a", b"a")
    setup.backend("backend-p", b"p")
    docs = [gateway_doc([
        tls_server("tls-a", [HOST_A, "c.example.test"],
                   {"mode": "SIMPLE", "credentialName": "cred-a"}),
        tls_server("tls-p", [HOST_P], {"mode": "PASSTHROUGH"})]),
        vs_tcp("vs-a", [HOST_A], "backend-a"), vs_tls("vs-p", HOST_P, "backend-p")]
    path = setup.config(docs)
    import sys

    out = subprocess.run([sys.executable, "-m", "tsgate", "validate", str(path),
                          "--credentials", str(setup.creds)], capture_output=True, text=True,
                         timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "spec.servers[0].tls" in text
    assert "does not cover host 'c.example.test'" in text
    assert "expires in 9 days" in text or "expires in 10 days" in text
    assert f"also covers the passthrough host(s) {HOST_P}" in text


def test_mutual_with_ca_crl_refuses_a_revoked_client(setup: Any, tmp_path: Path) -> None:
    good = setup.ca.issue("client-good", client=True)
    revoked = setup.ca.issue("client-revoked", client=True)
    (tmp_path / "ca.crl").write_bytes(setup.ca.crl([revoked]))
    docs = mutual_docs(setup, tmp_path, "MUTUAL", caCrl=str(tmp_path / "ca.crl"))
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        got, _, _ = talk(port, client_context(setup.ca, good, tmp_path), HOST_A)
        assert got == b"backend-a"
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            talk(port, client_context(setup.ca, revoked, tmp_path), HOST_A)


def test_credential_names_serve_rsa_and_ecdsa(setup: Any, tmp_path: Path) -> None:
    write_credential(setup.creds, "rsa", setup.ca.issue(HOST_A, dns=[HOST_A], kind="rsa"))
    write_credential(setup.creds, "ec", setup.ca.issue(HOST_A, dns=[HOST_A], kind="ec"))
    setup.backend("backend-a", b"backend-a")
    docs = [gateway_doc([tls_server("tls-a", [HOST_A], {
        "mode": "SIMPLE", "credentialNames": ["rsa", "ec"]})]),
        vs_tcp("vs-a", [HOST_A], "backend-a")]
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        kinds = {}
        for cipher in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"):
            ctx = client_context(setup.ca, maximum_version=ssl.TLSVersion.TLSv1_2)
            ctx.set_ciphers(cipher)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname=HOST_A) as s:
                from cryptography import x509

                der = s.getpeercert(binary_form=True)
                kinds[cipher] = type(x509.load_der_x509_certificate(der).public_key()).__name__
        assert "RSA" in kinds["ECDHE-RSA-AES128-GCM-SHA256"]
        assert "EC" in kinds["ECDHE-ECDSA-AES128-GCM-SHA256"]


def test_catch_all_host_terminates_clients_without_sni(setup: Any, tmp_path: Path) -> None:
    crt, key = setup.ca.issue(HOST_A, dns=[HOST_A], ips=["127.0.0.1"]).write(
        tmp_path / "a.crt", tmp_path / "a.key")
    setup.backend("backend-a", b"backend-a")
    docs = [gateway_doc([tls_server("tls-any", ["*"], {
        "mode": "SIMPLE", "serverCertificate": str(crt), "privateKey": str(key)})]),
        vs_tcp("vs-a", ["*"], "backend-a")]
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        ctx = client_context(setup.ca)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:  # an IP: no SNI
            assert s.recv(100) == b"backend-a\n"


def test_rotation_under_load_has_no_failed_handshake(setup: Any, tmp_path: Path) -> None:
    import threading

    from tests.support.tlscerts import cert_pem, key_pem

    secret = setup.creds / "cred-a"
    leaves = [setup.ca.issue(HOST_A, dns=[HOST_A]) for _ in range(4)]
    write_secret_volume(secret, {"tls.crt": cert_pem(leaves[0].cert),
                                 "tls.key": key_pem(leaves[0].key)}, 1)
    setup.backend("backend-a", b"backend-a")
    docs = [gateway_doc([tls_server("tls-a", [HOST_A],
                                    {"mode": "SIMPLE", "credentialName": "cred-a"})]),
            vs_tcp("vs-a", [HOST_A], "backend-a")]
    with setup.gateway(docs, "--watch-interval", "0.1") as gw:
        port = gw.port(PORT)
        ctx = client_context(setup.ca)
        seen: set[int] = set()
        failures: list[BaseException] = []
        stop = threading.Event()

        def load() -> None:
            from cryptography import x509

            for _ in range(2000):  # bounded
                if stop.is_set():
                    return
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                            ctx.wrap_socket(raw, server_hostname=HOST_A) as s:
                        der = s.getpeercert(binary_form=True)
                        assert s.recv(100) == b"backend-a\n"
                    seen.add(x509.load_der_x509_certificate(der).serial_number)
                except BaseException as exc:
                    failures.append(exc)

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        for generation, leaf in enumerate(leaves[1:], 2):
            time.sleep(0.5)
            write_secret_volume(secret, {"tls.crt": cert_pem(leaf.cert),
                                         "tls.key": key_pem(leaf.key)}, generation)
        deadline = time.monotonic() + 10
        while leaves[-1].cert.serial_number not in seen and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(30)
        assert not failures, failures[:3]
        assert leaves[-1].cert.serial_number in seen
        assert len(seen) >= 2


def test_bulk_both_ways_through_termination(setup: Any, tmp_path: Path) -> None:
    import hashlib

    from tests.support.backends import pattern, source

    size = 24 << 20

    def counted_sink(conn: socket.socket) -> None:
        digest, total = hashlib.sha256(), 0
        while total < size:
            chunk = conn.recv(min(1 << 20, size - total))
            if not chunk:
                break
            digest.update(chunk)
            total += len(chunk)
        conn.sendall(f"{digest.hexdigest()} {total}\n".encode())

    write_credential(setup.creds, "cred-a", setup.ca.issue(HOST_A, dns=[HOST_A]))
    write_credential(setup.creds, "cred-b", setup.ca.issue(HOST_B, dns=[HOST_B]))
    setup.backend("sink", b"", counted_sink)
    setup.backend("source", b"", source(size))
    docs = [gateway_doc([
        tls_server("tls-a", [HOST_A], {"mode": "SIMPLE", "credentialName": "cred-a"}),
        tls_server("tls-b", [HOST_B], {"mode": "SIMPLE", "credentialName": "cred-b"})]),
        vs_tcp("vs-a", [HOST_A], "sink"), vs_tcp("vs-b", [HOST_B], "source")]
    with setup.gateway(docs) as gw:
        port = gw.port(PORT)
        ctx = client_context(setup.ca)
        block = pattern(1 << 20)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST_A) as s:
            for _ in range(size >> 20):
                s.sendall(block)
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = s.recv(200)
                assert chunk
                answer += chunk
        expected = hashlib.sha256(block * (size >> 20)).hexdigest()
        assert answer.decode().split() == [expected, str(size)]
        # Download: the backend's FIN arrives as close_notify after every byte.
        got, digest = 0, hashlib.sha256()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST_B) as s:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                got += len(chunk)
        assert got == size
        assert digest.hexdigest() == hashlib.sha256(block * (size >> 20)).hexdigest()
