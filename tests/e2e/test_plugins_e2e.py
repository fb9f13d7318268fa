"""
Plugins in the running gateway: a third-party dropin whose parser and
observer raise arbitrary exceptions cannot take down the gateway or other
connections.
"""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path

import yaml

from tests.e2e.conftest import HOSTS, SNI_BOTH_FILES, Backends
from tests.e2e.test_seed_walkthrough import https_get, tls_client
from tests.support.backends import ThreadedServer, echo
from tests.support.gateway import GatewayProcess

CRASHER = textwrap.dedent('''
    """A deliberately broken third-party plugin (tests only)."""
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from tsgate.interfaces import IHintParser, IStreamObserverFactory


    @implementer(IPlugin, IHintParser)
    class CrashingParser:
        name = "crasher"
        protocol = "crasher"
        max_bytes = 64

        def parse(self, data):
            raise ZeroDivisionError("parser bug")


    class CrashingObserver:
        def client_data(self, data):
            raise KeyError("observer bug")

        def server_data(self, data):
            raise KeyError("observer bug")

        def attributes(self):
            raise KeyError("observer bug")


    @implementer(IPlugin, IStreamObserverFactory)
    class CrashingObserverFactory:
        name = "crasher-observer"
        protocol = "crasher"
        istio_protocols = ()
        port_name_prefixes = ("crasher",)

        def new_observer(self, emit):
            return CrashingObserver()


    parser = CrashingParser()
    observer = CrashingObserverFactory()
''')


def dropin(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    plugins = root / "tsgate" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "crasher.py").write_text(CRASHER)
    return root


def tcp_port_config(path: Path, backend_port: int) -> Path:
    docs = [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": 7600, "name": "crasher-tcp",
                                        "protocol": "TCP"}, "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "vs"},
         "spec": {"hosts": ["*"], "gateways": ["gw"],
                  "tcp": [{"route": [{"destination": {"host": "echo",
                                                      "port": {"number": 9000}}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "echo"},
         "spec": {"hosts": ["echo"], "resolution": "STATIC", "location": "MESH_INTERNAL",
                  "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP",
                             "targetPort": backend_port}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
    ]
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_crashing_third_party_plugin_cannot_take_the_gateway_down(
        backends: Backends, tmp_path: Path) -> None:
    server = ThreadedServer(echo)
    config = tcp_port_config(tmp_path / "tcp.yaml", server.port)
    # the dropin first, then whatever tsgate the run uses (a worktree on PYTHONPATH)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(dropin(tmp_path)),
                                                      os.environ.get("PYTHONPATH")) if p)}
    try:
        with GatewayProcess(SNI_BOTH_FILES + [str(backends.service_entries), str(config)],
                            ports=[31400, 7600], env=env) as gw:
            # The crashing observer is on the crasher-tcp port: bytes still flow.
            with socket.create_connection(("127.0.0.1", gw.port(7600)), timeout=10) as s:
                for n in range(5):
                    s.sendall(f"line {n}\n".encode())
                    assert s.recv(100) == f"line {n}\n".encode()
            # The crashing hint parser is tried on the TLS port: SNI routing still works.
            for index in (0, 1):
                with tls_client(gw.port(31400), HOSTS[index],
                                cafile=str(backends.certs[index].ca_chain)) as s:
                    assert https_get(s, HOSTS[index])["name"] == f"simple-tls-service-{index + 1}"
            # Plaintext on the TLS port gets past the TLS parser to the crashing one.
            good = tls_client(gw.port(31400), HOSTS[0], cafile=str(backends.certs[0].ca_chain))
            with socket.create_connection(("127.0.0.1", gw.port(31400)), timeout=10) as s:
                s.sendall(b"not tls at all\r\n")
                assert s.recv(100) == b""  # no TCP route on that port: closed (NR)
            assert https_get(good, HOSTS[0])["name"] == "simple-tls-service-1"
            good.close()
            gw.wait_access_lines(5)
            assert gw.process.poll() is None
            text = gw.text()
            # the failures were logged, not hidden
            assert "inspector crasher crashed" in text
            assert "stream observer crashed" in text
    finally:
        server.close()
