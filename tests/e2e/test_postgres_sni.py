"""
Two real PostgreSQL servers (the installed version) with TLS behind one
gateway port, chosen by SNI: psql's SSLRequest is answered by the gateway (the ``postgres-starttls``
negotiator), its ClientHello routed by SNI like any TLS passthrough, the
chosen server sent its own SSLRequest; the client then verifies the
server's certificate end to end (``sslmode=verify-full``) and the query
result says which server answered.

A client with ``sslmode=disable`` on that port sends a plain
StartupMessage, which has no SNI: it takes the port's TCP route when there
is one (the README's fallback rule) and is closed when there is none.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.gateway import GatewayProcess, free_port
from tests.support.postgres import CertificateAuthority, PostgresHandle, start_postgres
from tests.support.samples import client_hello

pytestmark = pytest.mark.e2e

PORT = 5432
HOSTS = ("pg1.example.test", "pg2.example.test")
#: A server with TLS off, behind an SNI route of its own.
NO_TLS_HOST = "pg3.example.test"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PostgresHandle]]:
    tmp = tmp_path_factory.mktemp("pg")
    ca = CertificateAuthority.create(tmp)
    handles: list[PostgresHandle] = []
    try:
        for host in HOSTS:
            handles.append(start_postgres(tmp, free_port(), host, ca=ca))
        handles.append(start_postgres(tmp, free_port(), NO_TLS_HOST, ca=ca, tls=False))
        yield handles
    finally:
        for handle in handles:
            handle.stop()


def gateway_config(path: Path, servers: list[PostgresHandle], fallback: bool) -> Path:
    """Istio YAML: a TLS passthrough server for both hosts (and maybe a TCP fallback)."""
    gateway_servers = [{
        "port": {"number": PORT, "name": "postgres-tls", "protocol": "TLS"},
        "hosts": [handle.cert_host for handle in servers],
        "tls": {"mode": "PASSTHROUGH"},
    }]
    docs: list[dict] = []
    for handle in servers:
        backend = f"{handle.name}.db.local"
        docs.append({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": handle.name},
            "spec": {"hosts": [handle.cert_host], "gateways": ["pg-gateway"],
                     "tls": [{"match": [{"port": PORT, "sniHosts": [handle.cert_host]}],
                              "route": [{"destination": {"host": backend,
                                                         "port": {"number": 5432}}}]}]},
        })
        docs.append({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": backend},
            "spec": {"hosts": [backend], "location": "MESH_INTERNAL", "resolution": "STATIC",
                     "ports": [{"number": 5432, "name": "tcp-postgres", "protocol": "TCP",
                                "targetPort": handle.port}],
                     "endpoints": [{"address": "127.0.0.1"}]},
        })
    if fallback:
        gateway_servers.append(
            {"port": {"number": PORT, "name": "postgres-plain", "protocol": "TCP"},
             "hosts": ["*"]}
        )
        docs.append({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "plain-fallback"},
            "spec": {"hosts": ["*"], "gateways": ["pg-gateway"],
                     "tcp": [{"match": [{"port": PORT}],
                              "route": [{"destination": {"host": f"{servers[0].name}.db.local",
                                                         "port": {"number": 5432}}}]}]},
        })
    docs.insert(0, {
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "pg-gateway"},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": gateway_servers},
    })
    path.write_text(yaml.safe_dump_all(docs))
    return path


def psql(port: int, sql: str, **params: str) -> subprocess.CompletedProcess[str]:
    conninfo = {"hostaddr": "127.0.0.1", "port": str(port), "user": "postgres",
                "dbname": "postgres", "connect_timeout": "10", "gssencmode": "disable",
                **params}
    return subprocess.run(
        ["psql", "-X", "-A", "-t", " ".join(f"{k}={v}" for k, v in conninfo.items()),
         "-c", sql],
        capture_output=True, text=True, timeout=60,
    )


WHO = "SELECT name || ' ' || ssl FROM whoami, pg_stat_ssl WHERE pid = pg_backend_pid()"


def test_two_servers_one_port_by_sni(servers, tmp_path):
    """verify-full psql to pg1 and pg2 through one gateway port reaches each server, over TLS."""
    config = gateway_config(tmp_path / "pg.yaml", servers, fallback=False)
    with GatewayProcess([str(config)], ports=[PORT]) as gw:
        port = gw.port(PORT)
        for handle in servers[:2]:
            result = psql(port, WHO, host=handle.cert_host, sslmode="verify-full",
                          sslrootcert=str(handle.ca_path))
            assert result.returncode == 0, result.stderr + gw.text()
            assert result.stdout.strip() == f"{handle.name} true"
        # The server's own certificate reaches the client: another CA does not verify it.
        other_ca = CertificateAuthority.create(tmp_path, "another test CA")
        wrong = psql(port, WHO, host=HOSTS[0], sslmode="verify-full",
                     sslrootcert=str(other_ca.path))
        assert wrong.returncode != 0
        assert "certificate verify failed" in wrong.stderr, wrong.stderr
        # sslmode=disable: a StartupMessage has no SNI, and this port has no TCP route.
        plain = psql(port, WHO, host=HOSTS[0], sslmode="disable")
        assert plain.returncode != 0
        assert "closed" in plain.stderr or "terminated" in plain.stderr, plain.stderr
        # pg3 has TLS off: it answers the replayed SSLRequest with N, the client is closed.
        refused = psql(port, WHO, host=NO_TLS_HOST, sslmode="require")
        assert refused.returncode != 0
        assert "EOF" in refused.stderr or "closed" in refused.stderr, refused.stderr
        lines = gw.wait_access_lines(5)
        assert any("upstream_refused" in ln and "pg3.db.local" in ln for ln in lines), lines
        assert servers[2].psql("SELECT name FROM whoami") == "pg3"  # it is up, just no TLS
        assert gw.process.poll() is None


def test_plain_client_takes_the_tcp_fallback(servers, tmp_path):
    """With a TCP server on the same port, sslmode=disable reaches its route (pg1), in clear."""
    config = gateway_config(tmp_path / "pg.yaml", servers, fallback=True)
    with GatewayProcess([str(config)], ports=[PORT]) as gw:
        port = gw.port(PORT)
        plain = psql(port, WHO, host=HOSTS[1], sslmode="disable")
        assert plain.returncode == 0, plain.stderr + gw.text()
        assert plain.stdout.strip() == "pg1 false"
        tls = psql(port, WHO, host=HOSTS[1], sslmode="verify-full",
                   sslrootcert=str(servers[1].ca_path))
        assert tls.returncode == 0, tls.stderr + gw.text()
        assert tls.stdout.strip() == "pg2 true"


#: PostgreSQL's SSLRequest: length 8, code 80877103.
SSL_REQUEST = struct.pack("!II", 8, 80877103)


class RefusesTls:
    """
    A plaintext PostgreSQL server as seen on the wire: it answers the
    SSLRequest with ``N`` and records every byte it gets after that, until
    the gateway closes the connection.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.first = b""
        self.after = b""
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(15)
            while len(self.first) < len(SSL_REQUEST):
                chunk = conn.recv(len(SSL_REQUEST) - len(self.first))
                if not chunk:
                    break
                self.first += chunk
            conn.sendall(b"N")
            try:
                while chunk := conn.recv(65536):
                    self.after += chunk
            except OSError:
                pass
        self.done.set()

    def close(self) -> None:
        self.sock.close()


def test_server_answering_n_gets_no_client_hello(tmp_path):
    """
    Catches: the client not being closed when the server answers ``N`` to the
    gateway's SSLRequest (the relay carrying on and replaying the client's
    ClientHello to a plaintext server). The server here is a socket that
    records what reaches it: exactly one SSLRequest, then nothing, and the
    client sees the connection closed.
    """
    server = RefusesTls()
    try:
        # gateway_config reads only name, cert_host and port
        handle = PostgresHandle(name="pgn", port=server.port, cert_host="pgn.example.test",
                                ca_path=tmp_path, datadir=tmp_path)
        config = gateway_config(tmp_path / "pg.yaml", [handle], fallback=False)
        with GatewayProcess([str(config)], ports=[PORT]) as gw:
            with socket.create_connection(("127.0.0.1", gw.port(PORT)), timeout=15) as s:
                s.sendall(SSL_REQUEST)
                assert s.recv(1) == b"S"  # the gateway's own answer
                s.sendall(client_hello("pgn.example.test"))
                try:
                    rest = s.recv(65536)
                except ConnectionResetError:
                    rest = b""
                assert rest == b""  # closed, nothing relayed back
            assert server.done.wait(15), "the gateway kept the server connection open"
            assert server.first == SSL_REQUEST
            assert server.after == b"", f"{len(server.after)} client bytes reached the server"
            lines = gw.wait_access_lines(1)
            assert any("postgres_upstream_refused_tls" in ln for ln in lines), lines
    finally:
        server.close()
