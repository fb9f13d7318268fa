"""
PROXY protocol with real peers: a real HAProxy ``send-proxy-v2`` in front of
tsgate (``tsgate.io/proxy-protocol``), and tsgate's header (DestinationRule
``trafficPolicy.proxyProtocol``) read by a real HAProxy ``accept-proxy`` and
a real nginx ``proxy_protocol`` listener. Refusals (missing, untrusted,
malformed) are checked on direct connections.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.e2e.test_traffic_policy import PORT, Pool, config, endpoint
from tests.support.gateway import free_port, wait_for_port

pytestmark = pytest.mark.skipif(not (shutil.which("haproxy") and shutil.which("nginx")),
                                reason="needs haproxy and nginx (.ci/run installs them)")

NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"


class Peer:
    """A real haproxy or nginx process in the foreground."""

    def __init__(self, args: list[str], port: int, workdir: Path) -> None:
        self.log = workdir / f"peer-{port}.log"
        self._out = self.log.open("w")
        self.process = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{args[0]} did not start: {self.log.read_text()}") from None
        self.port = port

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


def haproxy(workdir: Path, frontends: str) -> str:
    cfg = workdir / f"haproxy-{len(list(workdir.glob('haproxy-*.cfg')))}.cfg"
    cfg.write_text(f"""\
global
    log stdout format raw local0
defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
{frontends}
""")
    return str(cfg)


def nginx(workdir: Path, port: int) -> list[str]:
    root = workdir / f"nginx-{port}"
    root.mkdir()
    (root / "nginx.conf").write_text(f"""\
load_module {NGINX_STREAM};
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
stream {{
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        return "$proxy_protocol_addr:$proxy_protocol_port via $remote_addr\\n";
    }}
}}
""")
    return ["nginx", "-p", str(root), "-e", str(root / "error.log"),
            "-c", str(root / "nginx.conf")]


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.stop()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    p = Pool(tmp_path)
    yield p
    p.close()


def talk(port: int, source: str = "127.0.0.1", send: bytes = b"",
         timeout: float = 10) -> bytes:
    """Connect from ``source``, send, read until the peer closes or a line arrives."""
    with socket.socket() as sock:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        if send:
            sock.sendall(send)
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data


def wait_json_line(gateway: Any, remote: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in gateway.access_lines():
            record = json.loads(line)
            if record.get("downstream_remote_address") == remote:
                return record  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise TimeoutError(f"no access log line from {remote}: {gateway.access_lines()}")


def proxy_gateway(pool: Pool, tmp_path: Path, mode: str, trusted: Optional[str] = None,
                  backends: int = 1, dr: Optional[dict[str, Any]] = None,
                  extra: tuple[str, ...] = ()) -> list[int]:
    ports = pool.backends(backends)
    annotations = {"tsgate.io/proxy-protocol": mode}
    if trusted is not None:
        annotations["tsgate.io/proxy-protocol-trusted-cidrs"] = trusted
    pool.start(config(tmp_path / "c.yaml", [endpoint(p) for p in ports], dr,
                      gateway_annotations=annotations), extra=("--inspect-timeout", "2", *extra))
    return ports


def test_haproxy_send_proxy_v2_in_front_gives_tsgate_the_client_address(
        pool: Pool, peers: list[Peer], tmp_path: Path) -> None:
    ports = proxy_gateway(pool, tmp_path, "required", "127.0.0.1/32",
                          extra=("--access-log-format", "json"))
    front = free_port()
    peers.append(Peer(["haproxy", "-db", "-f", haproxy(tmp_path, f"""\
frontend fe
    bind 127.0.0.1:{front}
    default_backend tsgate
backend tsgate
    server gw 127.0.0.1:{pool.port} send-proxy-v2
""")], front, tmp_path))
    with socket.socket() as sock:
        sock.bind(("127.0.0.7", 0))
        sock.connect(("127.0.0.1", front))
        client = sock.getsockname()
        assert sock.recv(64) == f"{ports[0]}\n".encode()
    assert pool.gateway is not None
    record = wait_json_line(pool.gateway, f"127.0.0.7:{client[1]}")
    assert record["downstream_remote_address"] == f"127.0.0.7:{client[1]}"  # the client
    assert record["downstream_peer_address"].startswith("127.0.0.1:")  # the peer: HAProxy
    assert record["downstream_local_address"] == f"127.0.0.1:{front}"  # what the client reached
    assert "versions.v2.found" in pool.admin("/stats")


def test_consistent_hash_uses_the_proxied_client_address(
        pool: Pool, peers: list[Peer], tmp_path: Path) -> None:
    ports = proxy_gateway(pool, tmp_path, "required", "127.0.0.1/32", backends=3,
                          dr={"trafficPolicy": {"loadBalancer": {"consistentHash": {
                              "useSourceIp": True}}}})
    front = free_port()
    peers.append(Peer(["haproxy", "-db", "-f", haproxy(tmp_path, f"""\
frontend fe
    bind 127.0.0.1:{front}
    default_backend tsgate
backend tsgate
    server gw 127.0.0.1:{pool.port} send-proxy-v2
""")], front, tmp_path))
    sources = [f"127.0.0.{i}" for i in range(50, 70)]
    first = {s: talk(front, s) for s in sources}
    assert {s: talk(front, s) for s in sources} == first
    # every connection's peer is HAProxy (127.0.0.1): spread only if the header is used
    assert len(set(first.values())) >= 2
    assert set(first.values()) <= {f"{p}\n".encode() for p in ports}


def test_required_header_missing_is_refused(pool: Pool, tmp_path: Path) -> None:
    proxy_gateway(pool, tmp_path, "required")
    assert talk(pool.port, send=b"hello\r\n") == b""
    assert pool.gateway is not None
    deadline = time.monotonic() + 5
    while "PROXY protocol refused" not in pool.gateway.text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "PROXY protocol refused from 127.0.0.1" in pool.gateway.text()
    stats = pool.admin("/stats")
    assert "proxy_proto.not_found_disallowed" in stats
    assert "downstream_cx_proxy_proto_error" in stats


def test_malformed_header_is_refused(pool: Pool, tmp_path: Path) -> None:
    proxy_gateway(pool, tmp_path, "optional")
    assert talk(pool.port, send=b"PROXY TCP4 nonsense 10.0.0.1 1 2\r\n") == b""
    assert "proxy_proto.malformed" in pool.admin("/stats")


def test_untrusted_peers_cannot_send_a_header(pool: Pool, tmp_path: Path) -> None:
    ports = proxy_gateway(pool, tmp_path, "optional", "127.0.0.1/32")
    header = b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 7100\r\n"
    assert talk(pool.port, "127.0.0.3", send=header) == b""  # refused
    assert talk(pool.port, "127.0.0.1", send=header) == f"{ports[0]}\n".encode()
    # optional: a direct client without a header is served (after its first bytes)
    assert talk(pool.port, "127.0.0.3", send=b"hi") == f"{ports[0]}\n".encode()
    assert "proxy_proto.untrusted" in pool.admin("/stats")


def test_required_refuses_untrusted_peers_at_once(pool: Pool, tmp_path: Path) -> None:
    proxy_gateway(pool, tmp_path, "required", "127.0.0.1/32")
    started = time.monotonic()
    assert talk(pool.port, "127.0.0.4") == b""
    assert time.monotonic() - started < 1.5  # not after the header timeout


def test_optional_server_first_client_is_served_after_the_wait(pool: Pool, tmp_path: Path) -> None:
    ports = proxy_gateway(pool, tmp_path, "optional")
    assert talk(pool.port) == f"{ports[0]}\n".encode()  # the client sends nothing


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_proxy_out_read_by_nginx(pool: Pool, peers: list[Peer], tmp_path: Path,
                                 version: str) -> None:
    up = free_port()
    peers.append(Peer(nginx(tmp_path, up), up, tmp_path))
    pool.start(config(tmp_path / "c.yaml", [endpoint(up)],
                      {"trafficPolicy": {"proxyProtocol": {"version": version}}}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.5", 0))
        sock.connect(("127.0.0.1", pool.port))
        client = sock.getsockname()
        answer = sock.recv(256)
    assert answer == f"127.0.0.5:{client[1]} via 127.0.0.1\n".encode()


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_proxy_out_read_by_haproxy_accept_proxy(pool: Pool, peers: list[Peer], tmp_path: Path,
                                                version: str) -> None:
    backend = pool.backends(1)[0]
    up = free_port()
    haproxy_peer = Peer(["haproxy", "-db", "-f", haproxy(tmp_path, f"""\
frontend up
    bind 127.0.0.1:{up} accept-proxy
    log-format "client=%ci:%cp"
    default_backend be
backend be
    server b 127.0.0.1:{backend}
""")], up, tmp_path)
    peers.append(haproxy_peer)
    pool.start(config(tmp_path / "c.yaml", [endpoint(up)],
                      {"trafficPolicy": {"proxyProtocol": {"version": version}}}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.6", 0))
        sock.connect(("127.0.0.1", pool.port))
        client = sock.getsockname()
        assert sock.recv(64) == f"{backend}\n".encode()
    deadline = time.monotonic() + 10
    while f"client=127.0.0.6:{client[1]}" not in haproxy_peer.text() and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"client=127.0.0.6:{client[1]}" in haproxy_peer.text()


def test_client_address_from_proxy_in_is_sent_on_by_proxy_out(
        pool: Pool, peers: list[Peer], tmp_path: Path) -> None:
    """HAProxy send-proxy-v2 -> tsgate (required) -> nginx proxy_protocol: the client survives."""
    up = free_port()
    peers.append(Peer(nginx(tmp_path, up), up, tmp_path))
    pool.start(config(tmp_path / "c.yaml", [endpoint(up)],
                      {"trafficPolicy": {"proxyProtocol": {"version": "V1"}}},
                      gateway_annotations={"tsgate.io/proxy-protocol": "required",
                                           "tsgate.io/proxy-protocol-trusted-cidrs":
                                               "127.0.0.1/32"}))
    front = free_port()
    peers.append(Peer(["haproxy", "-db", "-f", haproxy(tmp_path, f"""\
frontend fe
    bind 127.0.0.1:{front}
    default_backend tsgate
backend tsgate
    server gw 127.0.0.1:{pool.port} send-proxy-v2
""")], front, tmp_path))
    with socket.socket() as sock:
        sock.bind(("127.0.0.8", 0))
        sock.connect(("127.0.0.1", front))
        client = sock.getsockname()
        answer = sock.recv(256)
    assert answer == f"127.0.0.8:{client[1]} via 127.0.0.1\n".encode()
    assert PORT == 7100
