"""
A Gateway API ``protocol: TLS`` listener with ``tls.mode: Terminate`` end to
end: a real ``twistd tsgate`` terminates TLS with the certificate of the
Secret its ``certificateRefs`` name (``--credentials DIR/<name>/``), an
attached TCPRoute carries the plaintext to an echo backend, and a Python ssl
client verifies the gateway's certificate against the test CA.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import yaml

from tests.support.backends import ThreadedServer, echo
from tests.support.gateway import GatewayProcess
from tests.support.tlscerts import CA, write_credential

PORT = 8443
HOST = "echo.example.test"


def greeting_echo(conn: socket.socket) -> None:
    conn.sendall(b"plain echo\n")
    echo(conn)


def test_terminate_listener_with_tcproute_reaches_a_plaintext_echo(tmp_path: Path) -> None:
    ca = CA.create()
    creds = tmp_path / "creds"
    creds.mkdir()
    write_credential(creds, "echo-cert", ca.issue(HOST, dns=[HOST]))
    backend = ThreadedServer(greeting_echo)
    docs = [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "infra"},
         "spec": {"gatewayClassName": "istio", "listeners": [
             {"name": "tls-term", "protocol": "TLS", "port": PORT, "hostname": HOST,
              "tls": {"mode": "Terminate", "certificateRefs": [{"name": "echo-cert"}]}}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
         "metadata": {"name": "echo", "namespace": "infra"},
         "spec": {"parentRefs": [{"name": "gw", "sectionName": "tls-term"}],
                  "rules": [{"backendRefs": [{"name": "echo", "port": 7}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "echo", "namespace": "infra"},
         "spec": {"hosts": ["echo.infra.svc.cluster.local"], "location": "MESH_INTERNAL",
                  "resolution": "STATIC",
                  "ports": [{"number": 7, "name": "tcp", "protocol": "TCP",
                             "targetPort": backend.port}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
    ]
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump_all(docs))
    ctx = ssl.create_default_context(cadata=ca.pem().decode())  # verifies name and chain
    try:
        with GatewayProcess([str(config)], [PORT], access_log=tmp_path / "access.log",
                            extra=["--credentials", str(creds)]) as gw:
            port = gw.port(PORT)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                local = raw.getsockname()
                with ctx.wrap_socket(raw, server_hostname=HOST) as s:
                    cert = s.getpeercert()
                    assert cert is not None and ("DNS", HOST) in cert["subjectAltName"]
                    with s.makefile("rb") as f:
                        assert f.readline() == b"plain echo\n"
                        payload = b"x" * 100_000 + b"\n"
                        s.sendall(payload)
                        assert f.readline() == payload
            line = gw.wait_access_line_from(local)
            assert "infra/echo#tcproute[0]" in line and "tls_mode=SIMPLE" in line
            # a client that does not trust the gateway's CA fails its handshake
            other = ssl.create_default_context(cadata=CA.create("other").pem().decode())
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                try:
                    other.wrap_socket(raw, server_hostname=HOST).close()
                    raise AssertionError("handshake with an untrusted certificate succeeded")
                except ssl.SSLCertVerificationError:
                    pass
    finally:
        backend.close()
