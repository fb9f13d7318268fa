"""
PostgreSQL TLS offload: psql (``sslmode=verify-full``) speaks TLS to the
gateway, which answers its SSLRequest with ``S``, terminates the TLS session
with the certificate chosen by SNI, and speaks plaintext to a PostgreSQL
server that has TLS off — or, with a DestinationRule ``trafficPolicy.tls``,
sends the server its own SSLRequest and originates TLS to it (verified
against the server's CA and name).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from tests.support.gateway import GatewayProcess, free_port
from tests.support.postgres import PG_USER, start_postgres
from tests.support.tlscerts import CA, write_credential

pytestmark = pytest.mark.e2e

PORT = 5432
HOST = "pg.offload.test"


def verify_full_dsn(gw: GatewayProcess, ca_file: Path) -> str:
    """psql's connection string to the gateway, verifying it as HOST against ``ca_file``."""
    return (f"host={HOST} hostaddr=127.0.0.1 port={gw.port(PORT)} user={PG_USER} "
            f"dbname=postgres sslmode=verify-full sslrootcert={ca_file}")


def psql(dsn: str, *commands: str, strict: bool = False) -> subprocess.CompletedProcess[str]:
    """Run psql (unaligned, tuples only) with each of ``commands`` as a ``-c``."""
    args = ["psql", "-X", "-A", "-t", *(["-v", "ON_ERROR_STOP=1"] if strict else []), dsn]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def test_psql_verify_full_through_tls_offload(tmp_path: Path) -> None:
    server = start_postgres(tmp_path, free_port(), "plain.db.local", name="offloaded",
                            tls=False)
    try:
        ca = CA.create()
        ca_file = ca.write(tmp_path / "ca.pem")
        creds = tmp_path / "creds"
        write_credential(creds, "pg-cert", ca.issue(HOST, dns=[HOST]))
        docs = offload_docs("plain.db.local", server.port, None)
        config = tmp_path / "pg.yaml"
        config.write_text(yaml.safe_dump_all(docs))
        with GatewayProcess([str(config)], [PORT], extra=["--credentials", str(creds)]) as gw:
            dsn = verify_full_dsn(gw, ca_file)
            out = psql(dsn, "SELECT name FROM whoami; SELECT ssl FROM pg_stat_ssl "
                       "WHERE pid = pg_backend_pid();", "\\conninfo", strict=True)
            assert out.returncode == 0, out.stderr + gw.text()
            lines = out.stdout.splitlines()
            assert lines[0] == "offloaded"
            # The server saw plaintext; the client had TLS (to the gateway).
            assert lines[1] == "f"
            assert "SSL connection (protocol: TLSv1.3" in out.stdout
            # A client that does not trust the gateway's CA is refused by psql.
            other = CA.create("other").write(tmp_path / "other.pem")
            bad = psql(dsn.replace(str(ca_file), str(other)), "SELECT 1")
            assert bad.returncode != 0
            assert "certificate verify failed" in bad.stderr
    finally:
        server.stop()


def offload_docs(db_host: str, db_port: int,
                 origination: Optional[dict[str, Any]]) -> list[Any]:
    """
    The terminating postgres server, its route, the database and, when
    ``origination`` is given, its DestinationRule ``trafficPolicy.tls``.
    """
    docs: list[Any] = [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "pg"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": PORT, "name": "tls-postgres",
                                        "protocol": "TLS"},
                               "hosts": [HOST],
                               "tls": {"mode": "SIMPLE", "credentialName": "pg-cert"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "pg"},
         "spec": {"hosts": [HOST], "gateways": ["pg"],
                  "tcp": [{"match": [{"port": PORT}],
                           "route": [{"destination": {"host": db_host,
                                                      "port": {"number": 5432}}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "secure"},
         "spec": {"hosts": [db_host], "location": "MESH_INTERNAL", "resolution": "STATIC",
                  "ports": [{"number": 5432, "name": "tcp-postgres", "protocol": "TCP",
                             "targetPort": db_port}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
    ]
    if origination is not None:
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                     "metadata": {"name": "secure"},
                     "spec": {"host": db_host, "trafficPolicy": {"tls": origination}}})
    return docs


def test_psql_verify_full_through_offload_with_originated_tls(tmp_path: Path) -> None:
    db_host = "secure.db.local"
    server = start_postgres(tmp_path, free_port(), db_host, name="originated", tls=True)
    try:
        ca = CA.create()
        ca_file = ca.write(tmp_path / "ca.pem")
        creds = tmp_path / "creds"
        write_credential(creds, "pg-cert", ca.issue(HOST, dns=[HOST]))
        docs = offload_docs(db_host, server.port, {"mode": "SIMPLE",
                                                   "caCertificates": str(server.ca_path)})
        config = tmp_path / "pg.yaml"
        config.write_text(yaml.safe_dump_all(docs))
        with GatewayProcess([str(config)], [PORT], extra=["--credentials", str(creds)]) as gw:
            dsn = verify_full_dsn(gw, ca_file)
            out = psql(dsn, "SELECT name FROM whoami; SELECT ssl, version FROM pg_stat_ssl "
                       "WHERE pid = pg_backend_pid();", "\\conninfo", strict=True)
            assert out.returncode == 0, out.stderr + gw.text()
            lines = out.stdout.splitlines()
            assert lines[0] == "originated"
            # The server saw TLS (tsgate's), the client had TLS to the gateway.
            assert lines[1].startswith("t|TLSv1."), lines
            assert "SSL connection (protocol: TLSv1.3" in out.stdout
            # Several sessions in a row, each with its own upstream handshake.
            for _ in range(3):
                again = psql(dsn, "SELECT name FROM whoami")
                assert again.stdout.strip() == "originated", again.stderr
    finally:
        server.stop()


def test_offload_refuses_an_upstream_whose_certificate_fails(tmp_path: Path) -> None:
    """The upstream's certificate from another CA: psql gets an error, not a session."""
    db_host = "secure.db.local"
    server = start_postgres(tmp_path, free_port(), db_host, name="originated", tls=True)
    try:
        ca = CA.create()
        ca_file = ca.write(tmp_path / "ca.pem")
        other = CA.create("other").write(tmp_path / "other.pem")
        creds = tmp_path / "creds"
        write_credential(creds, "pg-cert", ca.issue(HOST, dns=[HOST]))
        docs = offload_docs(db_host, server.port, {"mode": "SIMPLE",
                                                   "caCertificates": str(other)})
        config = tmp_path / "pg.yaml"
        config.write_text(yaml.safe_dump_all(docs))
        with GatewayProcess([str(config)], [PORT], extra=["--credentials", str(creds)]) as gw:
            dsn = verify_full_dsn(gw, ca_file)
            out = psql(dsn, "SELECT 1")
            assert out.returncode != 0
            # psql may try twice (TLS, then not): every attempt ends UF at the gateway
            line = gw.wait_access_lines(1)[0]
            assert '" 0 UF ' in line, line
            assert "CERTIFICATE_VERIFY_FAILED" in line, line
    finally:
        server.stop()
