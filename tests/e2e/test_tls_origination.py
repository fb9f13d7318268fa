"""
TLS origination, end to end: a plaintext client, ``twistd tsgate`` with a
DestinationRule ``trafficPolicy.tls``, and ``openssl s_server`` as the TLS
backend (``-rev``: it answers each line reversed).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from tests.support.gateway import GatewayProcess, free_port, wait_for_port
from tests.support.tlscerts import CA, write_credential

PORT = 31400
HOST = "secure.example.test"


class SServer:
    """``openssl s_server -rev`` on a loopback port."""

    def __init__(self, cert: Path, key: Path, client_ca: Optional[Path] = None) -> None:
        self.port = free_port()
        args = ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert", str(cert),
                "-key", str(key), "-rev", "-quiet"]
        if client_ca is not None:
            args += ["-Verify", "2", "-CAfile", str(client_ca), "-verify_return_error"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def config(path: Path, backend_port: int, tls: dict[str, Any]) -> Path:
    docs = [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": PORT, "name": "tcp", "protocol": "TCP"},
                               "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "vs"},
         "spec": {"hosts": ["*"], "gateways": ["gw"],
                  "tcp": [{"route": [{"destination": {"host": HOST,
                                                      "port": {"number": 443}}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "secure"},
         "spec": {"hosts": [HOST], "location": "MESH_EXTERNAL", "resolution": "STATIC",
                  "ports": [{"number": 443, "name": "tls", "protocol": "TLS",
                             "targetPort": backend_port}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "secure"},
         "spec": {"host": HOST, "trafficPolicy": {"tls": tls}}},
    ]
    path.write_text(yaml.safe_dump_all(docs))
    return path


def exchange(port: int, line: bytes = b"hello tsgate\n") -> tuple[bytes, tuple[str, int]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        local = s.getsockname()
        s.sendall(line)
        got = b""
        try:
            while not got.endswith(b"\n"):
                chunk = s.recv(100)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        return got, local


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[Any]:
    ca = CA.create()
    cert, key = ca.issue(HOST, dns=[HOST]).write(tmp_path / "s.crt", tmp_path / "s.key")
    servers: list[SServer] = []

    class Pki:
        def __init__(self) -> None:
            self.ca = ca
            self.ca_file = ca.write(tmp_path / "ca.pem")
            self.creds = tmp_path / "creds"
            self.creds.mkdir()

        def server(self, client_ca: Optional[Path] = None) -> SServer:
            server = SServer(cert, key, client_ca)
            servers.append(server)
            return server

        def gateway(self, backend: SServer, tls: dict[str, Any]) -> GatewayProcess:
            path = config(tmp_path / "c.yaml", backend.port, tls)
            return GatewayProcess([str(path)], [PORT],
                                  extra=["--credentials", str(self.creds)])

    yield Pki()
    for server in servers:
        server.stop()


def test_simple_origination_verifies_the_server_by_sni(pki: Any) -> None:
    backend = pki.server()
    with pki.gateway(backend, {"mode": "SIMPLE", "caCertificates": str(pki.ca_file),
                               "sni": HOST}) as gw:
        got, local = exchange(gw.port(PORT))
        assert got == b"etagst olleh\n"
        line = gw.wait_access_line_from(local)
        assert " - - - " in line.split('"- - -"', 1)[1][:10] or " 0 - " in line
        assert "upstream_tls_version=TLSv1.3" in line
        assert 'upstream_peer_subject="CN=secure.example.test"' in line


def test_destination_host_is_verified_when_no_sni(pki: Any) -> None:
    backend = pki.server()
    with pki.gateway(backend, {"mode": "SIMPLE", "caCertificates": str(pki.ca_file)}) as gw:
        got, _ = exchange(gw.port(PORT))
        assert got == b"etagst olleh\n"


def test_wrong_identity_closes_the_client_with_uf(pki: Any) -> None:
    backend = pki.server()
    with pki.gateway(backend, {"mode": "SIMPLE", "caCertificates": str(pki.ca_file),
                               "sni": HOST, "subjectAltNames": ["other.example.test"]}) as gw:
        got, local = exchange(gw.port(PORT))
        assert got == b""
        line = gw.wait_access_line_from(local)
        assert '"- - -" 0 UF ' in line, line
        reason = line.split('"')[3]
        assert reason.startswith("TLS_error:|") and "CERTIFICATE_VERIFY_FAILED" in reason, line
        assert "other.example.test" in reason


def test_untrusted_server_fails_and_insecure_skip_verify_accepts_it(pki: Any) -> None:
    backend = pki.server()
    other_ca = CA.create("other").write(pki.creds.parent / "other.pem")
    with pki.gateway(backend, {"mode": "SIMPLE", "caCertificates": str(other_ca),
                               "sni": HOST}) as gw:
        got, local = exchange(gw.port(PORT))
        assert got == b""
        line = gw.wait_access_line_from(local)
        assert '"- - -" 0 UF ' in line and "CERTIFICATE_VERIFY_FAILED" in line, line
    with pki.gateway(backend, {"mode": "SIMPLE", "insecureSkipVerify": True}) as gw:
        got, _ = exchange(gw.port(PORT))
        assert got == b"etagst olleh\n"


def test_system_roots_do_not_trust_a_private_ca(pki: Any) -> None:
    backend = pki.server()
    with pki.gateway(backend, {"mode": "SIMPLE", "sni": HOST}) as gw:
        got, local = exchange(gw.port(PORT))
        assert got == b""
        assert '"- - -" 0 UF ' in gw.wait_access_line_from(local)


def test_mutual_origination_presents_the_credential(pki: Any) -> None:
    backend = pki.server(client_ca=pki.ca_file)
    client = pki.ca.issue("tsgate-client", client=True)
    write_credential(pki.creds, "upstream-client", client, ca=pki.ca)
    with pki.gateway(backend, {"mode": "MUTUAL", "credentialName": "upstream-client",
                               "sni": HOST}) as gw:
        got, _ = exchange(gw.port(PORT))
        assert got == b"etagst olleh\n"
    # SIMPLE (no client certificate) against the same server: refused. With
    # TLS 1.3 the server checks the client certificate after our handshake
    # is done, so this is a closed upstream, not a handshake failure.
    with pki.gateway(backend, {"mode": "SIMPLE", "caCertificates": str(pki.ca_file),
                               "sni": HOST}) as gw:
        got, local = exchange(gw.port(PORT))
        assert got == b""
        gw.wait_access_line_from(local)
