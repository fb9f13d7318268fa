"""
Operating the running gateway: hot reload (SIGHUP and file changes) without
cutting established connections, and graceful drain on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.e2e.conftest import EXAMPLE, HOSTS, Backends
from tests.e2e.test_seed_walkthrough import BANNER_FIRST_LINE, https_get, recv_until, tls_client
from tests.support.backends import ThreadedServer
from tests.support.gateway import GatewayProcess, free_port
from tests.support.streams import EchoStreams


def wait_log(gw: GatewayProcess, text: str, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while gw.text().count(text) < count:
        assert time.monotonic() < deadline, f"waited for {count}x {text!r}:\n{gw.text()}"
        time.sleep(0.05)


def test_seed_flow_reload_keeps_the_old_session(backends: Backends, tmp_path: Path) -> None:
    """
    The book's sequence: TCP gateway first, then `kubectl delete` it and apply
    the SNI gateway. The established telnet-like session keeps echoing; new
    connections are routed by SNI.
    """
    config = tmp_path / "config"
    config.mkdir()
    for name in ("gateway-tcp.yaml", "echo-vs.yaml"):
        shutil.copy(EXAMPLE / name, config / name)
    shutil.copy(backends.service_entries, config / "local.yaml")
    with GatewayProcess([str(config)], ports=[31400], extra=["--watch-interval", "0"]) as gw:
        port = gw.port(31400)
        old = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert recv_until(old, b"Service default.\n").startswith(BANNER_FIRST_LINE)
        # kubectl delete -f gateway-tcp.yaml / echo-vs.yaml; kubectl apply the SNI files
        (config / "gateway-tcp.yaml").unlink()
        (config / "echo-vs.yaml").unlink()
        for name in ("sni/passthrough-sni-gateway-both.yaml", "sni/passthrough-sni-vs-1.yaml",
                     "sni/passthrough-sni-vs-2.yaml"):
            shutil.copy(EXAMPLE / name, config / Path(name).name)
        gw.signal(signal.SIGHUP)
        wait_log(gw, "configuration reloaded", 1)
        old.sendall(b"hello Sam\n")
        assert recv_until(old, b"\n") == b"hello Sam\n"
        for index in (0, 1):
            with tls_client(port, HOSTS[index], cafile=str(backends.certs[index].ca_chain)) as s:
                assert https_get(s, HOSTS[index])["name"] == f"simple-tls-service-{index + 1}"
        old.sendall(b"still here\n")
        assert recv_until(old, b"\n") == b"still here\n"
        old.close()


class Tagged:
    """An echo backend that first says which backend it is."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    def __call__(self, conn: socket.socket) -> None:
        conn.sendall(self.tag + b"\n")
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            conn.sendall(chunk)


def tagged_config(path: Path, backend_port: int) -> None:
    docs = [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": 7500, "name": "tcp", "protocol": "TCP"},
                               "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "vs"},
         "spec": {"hosts": ["*"], "gateways": ["gw"],
                  "tcp": [{"route": [{"destination": {"host": "backend",
                                                      "port": {"number": 9000}}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "backend"},
         "spec": {"hosts": ["backend"], "resolution": "STATIC", "location": "MESH_INTERNAL",
                  "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP",
                             "targetPort": backend_port}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    os.replace(tmp, path)  # atomic, as a ConfigMap update is


def test_reload_under_load(tmp_path: Path) -> None:
    """
    200 connections stream through the gateway while the configuration changes
    20 times, valid and invalid alternately: no connection is cut, no byte is
    lost, and every new connection goes where the table in force sends it.
    """
    servers = {b"A": ThreadedServer(Tagged(b"A")), b"B": ThreadedServer(Tagged(b"B"))}
    config = tmp_path / "gateway.yaml"
    tagged_config(config, servers[b"A"].port)
    with GatewayProcess([str(config)], ports=[7500], extra=["--watch-interval", "0"]) as gw:
        port = gw.port(7500)
        streams = EchoStreams(port, 200, b"A")
        streams.start()
        time.sleep(1)
        current, reloads, rejects = b"A", 0, 0
        for change in range(20):
            if change % 2 == 0:
                current = b"B" if current == b"A" else b"A"
                tagged_config(config, servers[current].port)
                reloads += 1
                expected_log = ("configuration reloaded", reloads)
            else:
                config.write_text("apiVersion: networking.istio.io/v1\nkind: Gateway\n"
                                  "metadata: {name: gw}\nspec:\n  servers: [{port: 7}]\n")
                rejects += 1
                expected_log = ("reload rejected", rejects)
            gw.signal(signal.SIGHUP)
            wait_log(gw, *expected_log)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                assert recv_until(s, b"\n") == current + b"\n", f"change {change}"
        streams.stop()
    for server in servers.values():
        server.close()
    assert streams.failures == []
    assert all(streams.moved), "every connection kept moving bytes"
    assert "reload rejected" in gw.text()


def test_file_change_triggers_reload(tmp_path: Path) -> None:
    """A watched config (as a ConfigMap volume swaps files) reloads without a signal."""
    servers = {b"A": ThreadedServer(Tagged(b"A")), b"B": ThreadedServer(Tagged(b"B"))}
    config_dir = tmp_path / "cm"
    config_dir.mkdir()
    # the ConfigMap layout: ..data -> ..2026_x, gateway.yaml -> ..data/gateway.yaml
    first = config_dir / "..2026_11_25_a"
    first.mkdir()
    tagged_config(first / "gateway.yaml", servers[b"A"].port)
    os.symlink(first.name, config_dir / "..data")
    os.symlink("..data/gateway.yaml", config_dir / "gateway.yaml")
    with GatewayProcess([str(config_dir)], ports=[7500],
                        extra=["--watch-interval", "0.2"]) as gw:
        port = gw.port(7500)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert recv_until(s, b"\n") == b"A\n"
        second = config_dir / "..2026_11_25_b"
        second.mkdir()
        tagged_config(second / "gateway.yaml", servers[b"B"].port)
        os.symlink(second.name, config_dir / "..data_tmp")
        os.replace(config_dir / "..data_tmp", config_dir / "..data")
        wait_log(gw, "configuration reloaded", 1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert recv_until(s, b"\n") == b"B\n"
    for server in servers.values():
        server.close()


def test_sigterm_drains_then_exits_zero(tmp_path: Path) -> None:
    server = ThreadedServer(Tagged(b"A"))
    config = tmp_path / "gateway.yaml"
    tagged_config(config, server.port)
    readiness = free_port()
    gw = GatewayProcess([str(config)], ports=[7500],
                        extra=["--drain-period", "2", "--readiness",
                               f"tcp:{readiness}:interface=127.0.0.1"])
    url = f"http://127.0.0.1:{readiness}/healthz/ready"
    try:
        wait_log(gw, "tsgate readiness on", 1)
        assert urllib.request.urlopen(url, timeout=5).status == 200
        port = gw.port(7500)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert recv_until(s, b"\n") == b"A\n"
        started = time.monotonic()
        gw.signal(signal.SIGTERM)
        wait_log(gw, "draining", 1)
        # During the drain: readiness fails, the open connection still works,
        # new connections are refused.
        try:
            status = urllib.request.urlopen(url, timeout=5).status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        assert status != 200
        s.sendall(b"during drain\n")
        assert recv_until(s, b"\n") == b"during drain\n"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            refused = False
        except OSError:
            refused = True
        assert refused
        assert s.recv(10) == b""  # cut when the drain period is over
        assert time.monotonic() - started >= 1.9
        assert gw.process.wait(15) == 0
        assert "closed 1 connection(s)" in gw.text()
    finally:
        gw.stop()
        server.close()
