"""
AuthorizationPolicy principals from client certificates, end to end: a real
``twistd tsgate`` terminating MUTUAL TLS (certificates generated now), an
ALLOW policy on ``principals``, Python ssl clients with SPIFFE URI SANs and
a backend that counts the connections it accepted.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.backends import ThreadedServer, echo
from tests.support.gateway import GatewayProcess, free_port, wait_for_port
from tests.support.tlscerts import CA, Leaf, write_credential

PORT = 8443
HOST = "m.example.test"
GOOD = "spiffe://cluster.local/ns/good/sa/client"
OTHER = "spiffe://cluster.local/ns/other/sa/client"


class Counting:
    """A plaintext backend: counts accepts, greets, then echoes."""

    def __init__(self) -> None:
        self.accepted = 0
        self.lock = threading.Lock()
        self.server = ThreadedServer(self.handle)

    def handle(self, conn: socket.socket) -> None:
        with self.lock:
            self.accepted += 1
        conn.sendall(b"backend\n")
        echo(conn)


def docs(backend_port: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "apps"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": PORT, "name": "tls-m", "protocol": "TLS"},
                               "hosts": [HOST],
                               "tls": {"mode": "MUTUAL", "credentialName": "cred-m"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "vs", "namespace": "apps"},
         "spec": {"hosts": [HOST], "gateways": ["gw"],
                  "tcp": [{"match": [{"port": PORT}],
                           "route": [{"destination": {"host": "backend.local",
                                                      "port": {"number": 9000}}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "backend", "namespace": "apps"},
         "spec": {"hosts": ["backend.local"], "location": "MESH_INTERNAL",
                  "resolution": "STATIC",
                  "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP",
                             "targetPort": backend_port}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "only-good", "namespace": "apps"},
         "spec": {"action": "ALLOW",
                  "rules": [{"from": [{"source": {
                      "principals": ["cluster.local/ns/good/sa/client"]}}]}]}},
    ]


def context(ca: CA, leaf: Leaf, tmp: Path, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.pem().decode())
    ctx.load_cert_chain(*leaf.write(tmp / f"{name}.crt", tmp / f"{name}.key"))
    return ctx


def stats(admin: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?format=json", timeout=10) as r:
        data = json.loads(r.read())
    return {s["name"]: s["value"] for s in data["stats"] if "value" in s}


def test_allow_principals_from_the_client_certificate(tmp_path: Path) -> None:
    ca = CA.create()
    creds = tmp_path / "creds"
    creds.mkdir()
    write_credential(creds, "cred-m", ca.issue(HOST, dns=[HOST]), ca=ca, separate_ca=True)
    backend = Counting()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump_all(docs(backend.server.port)))
    admin = free_port()
    try:
        with GatewayProcess([str(config)], [PORT], access_log=tmp_path / "access.log",
                            extra=["--credentials", str(creds),
                                   "--admin", f"tcp:{admin}:interface=127.0.0.1"]) as gw:
            port = gw.port(PORT)
            wait_for_port(admin)
            # the client whose certificate says cluster.local/ns/good/sa/client
            good = context(ca, ca.issue("good", uris=[GOOD], client=True), tmp_path, "good")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                local = raw.getsockname()
                with good.wrap_socket(raw, server_hostname=HOST) as s:
                    with s.makefile("rb") as f:
                        assert f.readline() == b"backend\n"
                        s.sendall(b"ping\n")
                        assert f.readline() == b"ping\n"
            line = gw.wait_access_line_from(local)
            assert "source_principal=" + GOOD in line
            assert "rbac_access_denied" not in line
            assert backend.accepted == 1

            # another SPIFFE identity, and a certificate without a URI SAN: the
            # handshake succeeds (same CA) and the connection is closed before
            # any upstream connect
            for name, leaf in (("other", ca.issue("other", uris=[OTHER], client=True)),
                               ("plain", ca.issue("plain", dns=["plain.test"], client=True))):
                ctx = context(ca, leaf, tmp_path, name)
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    local = raw.getsockname()
                    with ctx.wrap_socket(raw, server_hostname=HOST) as s:
                        got = b""
                        try:
                            while True:
                                chunk = s.recv(100)
                                if not chunk:
                                    break
                                got += chunk
                        except (ssl.SSLError, ConnectionError):
                            pass
                        assert got == b""  # not a byte from the backend
                line = gw.wait_access_line_from(local)
                assert "rbac_access_denied_matched_policy[none]" in line, line
            assert backend.accepted == 1  # the denied clients caused no upstream connection
            counters = stats(admin)
            assert counters["tcp.rbac.allowed"] == 1
            assert counters["tcp.rbac.denied"] == 2
    finally:
        backend.server.close()
