"""
The parser contract in the running gateway: first bytes larger than an
inspector's ``max_bytes`` close the connection (no upstream, even where a TCP
fallback exists) and count ``<name>.too_large``, as ``/stats`` and
``/stats/prometheus`` show: the TLS parser's as Envoy's
``tls_inspector.client_hello_too_large``, a third-party parser's by its name.
"""

from __future__ import annotations

import http.client
import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.backends import ThreadedServer, echo
from tests.support.gateway import GatewayProcess, free_port, wait_for_port

PORT = 7443
LISTENER = f"0.0.0.0_{PORT}"

#: A dropin whose parser never decides on ``GREEDY...`` (max_bytes 64).
GREEDY = textwrap.dedent('''
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from tsgate.interfaces import NEED_MORE, IHintParser, NotMine


    @implementer(IPlugin, IHintParser)
    class GreedyParser:
        name = "greedy"
        protocol = "greedy"
        max_bytes = 64

        def parse(self, data):
            if data.startswith(b"GREEDY") or b"GREEDY".startswith(data):
                return NEED_MORE
            return NotMine("not greedy")


    parser = GreedyParser()
''')


def mixed_port(path: Path, backend_port: int) -> Path:
    """Port 7443: TLS passthrough for a.example.test, and a TCP fallback, both to echo."""
    echo_route = [{"destination": {"host": "echo", "port": {"number": 9000}}}]
    docs = [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
             {"port": {"number": PORT, "name": "tls", "protocol": "TLS"},
              "hosts": ["a.example.test"], "tls": {"mode": "PASSTHROUGH"}},
             {"port": {"number": PORT, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "vs"},
         "spec": {"hosts": ["*"], "gateways": ["gw"],
                  "tls": [{"match": [{"port": PORT, "sniHosts": ["a.example.test"]}],
                           "route": echo_route}],
                  "tcp": [{"match": [{"port": PORT}], "route": echo_route}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "echo"},
         "spec": {"hosts": ["echo"], "resolution": "STATIC", "location": "MESH_INTERNAL",
                  "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP",
                             "targetPort": backend_port}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
    ]
    path.write_text(yaml.safe_dump_all(docs))
    return path


class Running:
    def __init__(self, gw: GatewayProcess, admin: int) -> None:
        self.gw, self.admin = gw, admin

    def get(self, path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200
            return response.read().decode()
        finally:
            conn.close()

    def counter(self, name: str) -> Optional[float]:
        """A counter of the listener from /stats/prometheus (None: not exported)."""
        text = self.get("/stats/prometheus")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:  # the parser calls a counter's sample ..._total
                if sample.name in (name, name + "_total") \
                        and sample.labels.get("listener_address") == LISTENER:
                    return float(sample.value)
        return None

    def wait_counter(self, name: str, want: float) -> Optional[float]:
        deadline = time.monotonic() + 10
        while (value := self.counter(name)) != want and time.monotonic() < deadline:
            time.sleep(0.05)
        return value


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("too-large")
    plugins = tmp / "site" / "tsgate" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "greedy.py").write_text(GREEDY)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(tmp / "site"),
                                                      os.environ.get("PYTHONPATH")) if p)}
    server = ThreadedServer(echo)
    admin = free_port()
    try:
        with GatewayProcess([str(mixed_port(tmp / "mixed.yaml", server.port))], ports=[PORT],
                            extra=["--admin", f"tcp:{admin}:interface=127.0.0.1",
                                   "--watch-interval", "0"], env=env) as gw:
            wait_for_port(admin)
            yield Running(gw, admin)
    finally:
        server.close()


def closed_without_reply(port: int, first_bytes: bytes) -> bytes:
    """Send the first bytes; what comes back before the gateway closes (b"" if nothing)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(first_bytes)
        try:
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:  # closed with our bytes unread: also a close
            pass
    return got


def test_plaintext_gets_the_tcp_fallback(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.gw.port(PORT)), timeout=10) as s:
        s.sendall(b"hello\n")
        assert s.recv(100) == b"hello\n"


def test_oversized_client_hello_is_closed_and_counted(running: Running) -> None:
    name = "envoy_tls_inspector_client_hello_too_large"
    assert running.counter(name) == 0  # declared at 0 for an inspecting listener
    # a handshake record announcing a ClientHello of 60,000 bytes, and the start of it
    hello = b"\x16\x03\x01\x3f\xff\x01\x00\xea\x60" + bytes(2000)
    assert closed_without_reply(running.gw.port(PORT), hello) == b""
    assert running.wait_counter(name, 1) == 1
    assert f"tls_inspector.{LISTENER}.client_hello_too_large: 1" in running.get("/stats")


def test_a_plugin_undecided_at_its_max_bytes_is_closed_and_counted(running: Running) -> None:
    assert running.counter("envoy_greedy_too_large") is None  # appears on first use
    preamble = b"GREEDY" + b"x" * 200  # past the parser's 64 bytes
    assert closed_without_reply(running.gw.port(PORT), preamble) == b""
    assert running.wait_counter("envoy_greedy_too_large", 1) == 1
    assert f"greedy.{LISTENER}.too_large: 1" in running.get("/stats")
    # nothing reached the echo backend: the fallback still echoes the next client
    test_plaintext_gets_the_tcp_fallback(running)
