"""
A real ``twistd -n tsgate`` serving a Gateway with two TCP ports: one whose
VirtualService routes to a subset no DestinationRule defines (valid Istio,
IST0101), one to a subset that exists. The gateway starts (a warning, not a
refusal); a client on the first port is closed at once with ``NC`` in the
access log and in ``istio_tcp_connections_closed_total``, as Envoy closes a
connection whose route names a cluster that does not exist; a client on the
second port reaches the echo backend.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from tests.admin.test_metrics_e2e import scrape, total
from tests.support.backends import ThreadedServer, echo
from tests.support.gateway import GatewayProcess, free_port, wait_for_port

pytestmark = pytest.mark.e2e

BAD, GOOD = 31400, 31401
HOST = "echo.example.com"


def config(tmp_path: Path, backend_port: int) -> Path:
    path = tmp_path / "istio.yaml"
    path.write_text(yaml.safe_dump_all([
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": p, "name": f"tcp-{p}", "protocol": "TCP"},
                               "hosts": ["*"]} for p in (BAD, GOOD)]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "echo"},
         "spec": {"hosts": [HOST], "location": "MESH_INTERNAL", "resolution": "STATIC",
                  "ports": [{"number": 2701, "name": "tcp", "protocol": "TCP",
                             "targetPort": backend_port}],
                  "endpoints": [{"address": "127.0.0.1", "labels": {"version": "v1"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "echo"},
         "spec": {"host": HOST, "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}},
        *({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": name},
           "spec": {"hosts": ["*"], "gateways": ["gw"],
                    "tcp": [{"match": [{"port": port}],
                             "route": [{"destination": {"host": HOST, "subset": subset,
                                                        "port": {"number": 2701}}}]}]}}
          for name, port, subset in (("bad", BAD, "v2"), ("good", GOOD, "v1"))),
    ]))
    return path


def closed_without_data(s: socket.socket) -> bool:
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_missing_subset_route_closes_with_nc_and_others_work(tmp_path: Path) -> None:
    backend = ThreadedServer(echo)
    admin = free_port()
    log = tmp_path / "access.log"
    proc = GatewayProcess([str(config(tmp_path, backend.port))], [BAD, GOOD], access_log=log,
                          extra=["--admin", f"tcp:{admin}:interface=127.0.0.1"])
    try:
        wait_for_port(admin)
        assert "IST0101" in proc.text() and "outbound|2701|v2|echo.example.com" in proc.text()

        with socket.create_connection(("127.0.0.1", proc.port(BAD)), timeout=10) as s:
            client = s.getsockname()
            assert closed_without_data(s)
        line = proc.wait_access_line_from(client)
        assert " NC " in line, line
        assert "outbound|2701|v2|echo.example.com" in line

        with socket.create_connection(("127.0.0.1", proc.port(GOOD)), timeout=10) as s:
            good_client = s.getsockname()
            s.sendall(b"hello Sam\n")
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := s.recv(65536):
                got += chunk
        assert bytes(got) == b"hello Sam\n"
        good_line = proc.wait_access_line_from(good_client)
        assert " NC " not in good_line and "outbound|2701|v1|echo.example.com" in good_line

        families = scrape(admin)
        assert total(families, "istio_tcp_connections_closed_total", response_flags="NC",
                     destination_service=HOST) == 1
        assert total(families, "istio_tcp_connections_closed_total", response_flags="NC") == 1
    finally:
        proc.stop()
        backend.close()
    assert not backend.errors
