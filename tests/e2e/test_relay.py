"""
Integrity and flow through a real gateway process: bulk bytes with matching
sha256, half-close both ways, bounded memory behind a slow reader, and many
concurrent connections.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.backends import (
    HalfCloseFirst,
    ThreadedServer,
    echo,
    pattern,
    sha256_sink,
    source,
)
from tests.support.gateway import GatewayProcess

GIB = 1 << 30


def tcp_config(path: Path, port: int, backend_port: int, name: str = "relay") -> Path:
    docs = [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": f"{name}-gw"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": port, "name": "tcp", "protocol": "TCP"},
                               "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": f"{name}-vs"},
         "spec": {"hosts": ["*"], "gateways": [f"{name}-gw"],
                  "tcp": [{"match": [{"port": port}],
                           "route": [{"destination": {"host": f"{name}-backend",
                                                      "port": {"number": 9000}}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": f"{name}-backend"},
         "spec": {"hosts": [f"{name}-backend"], "location": "MESH_INTERNAL",
                  "resolution": "STATIC",
                  "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP",
                             "targetPort": backend_port}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
    ]
    path.write_text(yaml.safe_dump_all(docs))
    return path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def gateway_to(tmp_path: Path) -> Iterator:
    started: list[tuple[ThreadedServer, GatewayProcess]] = []

    def start(handler, **kwargs) -> tuple[ThreadedServer, GatewayProcess]:
        server = ThreadedServer(handler)
        config = tcp_config(tmp_path / f"relay{len(started)}.yaml", 7000, server.port)
        gw = GatewayProcess([str(config)], ports=[7000], **kwargs)
        started.append((server, gw))
        return server, gw

    yield start
    for server, gw in started:
        gw.stop()
        server.close()


def test_one_gib_upstream_with_matching_sha256(gateway_to) -> None:
    """1 GiB client -> upstream, then the client's half-close; the reply comes back whole."""
    server, gw = gateway_to(sha256_sink)
    block = pattern(1 << 20)
    expected = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", gw.port(7000)), timeout=60) as s:
        for _ in range(GIB // len(block)):
            s.sendall(block)
            expected.update(block)
        s.shutdown(socket.SHUT_WR)  # half-close: we still read the reply
        reply = s.makefile("rb").readline()
    assert reply == f"{expected.hexdigest()} {GIB}\n".encode()
    assert server.errors == []


def test_one_gib_downstream_with_matching_sha256(gateway_to) -> None:
    server, gw = gateway_to(source(GIB))
    block = pattern(1 << 20)
    expected = hashlib.sha256()
    for _ in range(GIB // len(block)):
        expected.update(block)
    got, total = hashlib.sha256(), 0
    with socket.create_connection(("127.0.0.1", gw.port(7000)), timeout=60) as s:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break  # the upstream's half-close reached us
            got.update(chunk)
            total += len(chunk)
    assert (total, got.hexdigest()) == (GIB, expected.hexdigest())


def test_upstream_half_close_then_client_keeps_sending(gateway_to) -> None:
    """The upstream shuts its write side first; the client still gets its bytes upstream."""
    handler = HalfCloseFirst()
    server, gw = gateway_to(handler)
    with socket.create_connection(("127.0.0.1", gw.port(7000)), timeout=10) as s:
        data = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        assert data == b"bye\n"
        s.sendall(b"still here\n" * 1000)
        s.shutdown(socket.SHUT_WR)
        assert handler.done.wait(10)
    assert handler.received == b"still here\n" * 1000


def test_slow_reader_keeps_gateway_memory_bounded(gateway_to) -> None:
    """A fast upstream and a client reading slowly: the gateway pauses the upstream."""
    server, gw = gateway_to(source(4 * GIB))
    pid = gw.process.pid
    with socket.create_connection(("127.0.0.1", gw.port(7000)), timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.recv(65536)
        time.sleep(0.5)
        baseline = rss_kib(pid)
        received = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # bounded: 4 s of slow reading
            received += len(s.recv(4096))
            time.sleep(0.01)
        grown = rss_kib(pid) - baseline
    # Each direction buffers about two read sizes (2 x 256 KiB) in the gateway;
    # kernel socket buffers are not in RSS. 16 MiB leaves room for allocator noise
    # while a missing pause would grow by the upstream's GB/s.
    assert grown < 16 * 1024, f"gateway RSS grew by {grown} KiB"
    assert received > 0


def test_thousand_concurrent_connections_each_verified(gateway_to) -> None:
    server, gw = gateway_to(echo)
    port = gw.port(7000)
    socks = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            socks.append(s)
        for n, s in enumerate(socks):
            s.sendall(f"connection {n} {'x' * (n % 97)}\n".encode())
        for n, s in enumerate(socks):
            want = f"connection {n} {'x' * (n % 97)}\n".encode()
            got = b""
            while len(got) < len(want):
                chunk = s.recv(len(want) - len(got))
                assert chunk, f"connection {n} closed early"
                got += chunk
            assert got == want
    finally:
        for s in socks:
            s.close()
    assert server.errors == []


def test_client_close_mid_stream_closes_upstream(gateway_to) -> None:
    """A client that resets mid-transfer does not leave the upstream connection open."""
    closed = threading.Event()

    def handler(conn: socket.socket) -> None:
        try:
            while True:
                conn.sendall(b"x" * 65536)
        except OSError:
            closed.set()

    server, gw = gateway_to(handler)
    s = socket.create_connection(("127.0.0.1", gw.port(7000)), timeout=10)
    s.recv(1000)
    s.close()
    assert closed.wait(10)
