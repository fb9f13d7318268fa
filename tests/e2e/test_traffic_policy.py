"""
DestinationRule traffic policy on real sockets: real backends on several
loopback ports, clients from several 127.0.0.x source addresses, a real
gateway process. Load balancing per policy, stickiness by source, weights,
subsets, maxConnections overflow, outlier ejection, connect attempts,
active health checks, TCP keepalive on upstream sockets (``ss -o``) and DNS
endpoints.
"""

from __future__ import annotations

import collections
import json
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from tests.support.backends import ThreadedServer
from tests.support.gateway import GatewayProcess, free_port, wait_for_port
from tests.support.net import Blackhole

PORT = 7100


def ident(conn: socket.socket) -> None:
    """Say which backend this is (its port), then hold the connection until the client closes."""
    conn.sendall(f"{conn.getsockname()[1]}\n".encode())
    while conn.recv(65536):
        pass


def config(path: Path, endpoints: list[dict[str, Any]], dr: Optional[dict[str, Any]] = None,
           subset: str = "", resolution: str = "STATIC",
           gateway_annotations: Optional[dict[str, str]] = None) -> Path:
    destination: dict[str, Any] = {"host": "pool", "port": {"number": 9000}}
    if subset:
        destination["subset"] = subset
    docs: list[dict[str, Any]] = [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "annotations": gateway_annotations or {}},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": PORT, "name": "tcp", "protocol": "TCP"},
                               "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "vs"},
         "spec": {"hosts": ["*"], "gateways": ["gw"],
                  "tcp": [{"route": [{"destination": destination}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "pool"},
         "spec": {"hosts": ["pool"], "location": "MESH_INTERNAL", "resolution": resolution,
                  "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP"}],
                  "endpoints": endpoints}},
    ]
    if dr is not None:
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                     "metadata": {"name": "pool", **dr.pop("metadata", {})},
                     "spec": {"host": "pool", **dr}})
    path.write_text(yaml.safe_dump_all(docs))
    return path


def endpoint(port: int, address: str = "127.0.0.1", **extra: Any) -> dict[str, Any]:
    return {"address": address, "ports": {"tcp": port}, **extra}


class Pool:
    """Backends, a gateway in front of them, and clients from chosen source addresses."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[ThreadedServer] = []
        self.gateway: Optional[GatewayProcess] = None
        self.admin_port = 0
        self.held: list[socket.socket] = []

    def backends(self, n: int) -> list[int]:
        for _ in range(n):
            self.servers.append(ThreadedServer(ident))
        return [s.port for s in self.servers[-n:]]

    def start(self, cfg: Path, extra: tuple[str, ...] = ()) -> GatewayProcess:
        self.admin_port = free_port()
        self.gateway = GatewayProcess(
            [str(cfg)], ports=[PORT], access_log=self.tmp_path / "access.log",
            extra=["--admin", f"tcp:{self.admin_port}:interface=127.0.0.1", *extra])
        wait_for_port(self.admin_port)
        return self.gateway

    @property
    def port(self) -> int:
        assert self.gateway is not None
        return self.gateway.port(PORT)

    def connect(self, source: str = "127.0.0.1", hold: bool = False) -> Optional[int]:
        """The backend port the connection reached, or None if the gateway closed it."""
        sock = socket.socket()
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", self.port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(64)
            if not chunk:
                break
            data += chunk
        if hold and data:
            self.held.append(sock)
        else:
            sock.close()
        return int(data) if data else None

    def admin(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as r:
            body = r.read().decode()
        return json.loads(body) if "format=json" in path else body

    def close(self) -> None:
        for sock in self.held:
            sock.close()
        if self.gateway is not None:
            self.gateway.stop()
        for server in self.servers:
            server.close()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    p = Pool(tmp_path)
    yield p
    p.close()


def test_round_robin_rotates_over_every_endpoint(pool: Pool, tmp_path: Path) -> None:
    ports = pool.backends(3)
    pool.start(config(tmp_path / "c.yaml", [endpoint(p) for p in ports],
                      {"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}))
    seen = [pool.connect() for _ in range(9)]
    assert collections.Counter(seen) == {p: 3 for p in ports}
    assert len(set(seen[:3])) == 3 and seen[:3] == seen[3:6] == seen[6:]


def test_default_least_request_spreads_held_connections(pool: Pool, tmp_path: Path) -> None:
    """No DestinationRule: Istio's default LEAST_REQUEST (fewest active, power of two choices)."""
    ports = pool.backends(3)
    pool.start(config(tmp_path / "c.yaml", [endpoint(p) for p in ports]))
    seen = collections.Counter(pool.connect(hold=True) for _ in range(30))
    assert set(seen) == set(ports)
    assert max(seen.values()) - min(seen.values()) <= 3, seen
    text = pool.admin("/clusters")
    assert "lb_policy::LEAST_REQUEST" in text


def test_least_request_avoids_the_busy_endpoint(pool: Pool, tmp_path: Path) -> None:
    ports = pool.backends(2)
    pool.start(config(tmp_path / "c.yaml", [endpoint(p) for p in ports],
                      {"trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}))
    first = pool.connect(hold=True)
    # every further connection goes to the idle one until both are equal
    assert pool.connect(hold=True) != first
    held = collections.Counter(pool.connect(hold=True) for _ in range(10))
    assert held[ports[0]] == held[ports[1]] == 5


def test_random_reaches_every_endpoint(pool: Pool, tmp_path: Path) -> None:
    ports = pool.backends(3)
    pool.start(config(tmp_path / "c.yaml", [endpoint(p) for p in ports],
                      {"trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}))
    seen = collections.Counter(pool.connect() for _ in range(60))
    assert set(seen) == set(ports)


def test_weighted_endpoints_round_robin(pool: Pool, tmp_path: Path) -> None:
    ports = pool.backends(2)
    pool.start(config(tmp_path / "c.yaml",
                      [endpoint(ports[0], weight=3), endpoint(ports[1], weight=1)],
                      {"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}))
    seen = collections.Counter(pool.connect() for _ in range(12))
    assert seen == {ports[0]: 9, ports[1]: 3}


@pytest.mark.parametrize("algorithm", [{}, {"ringHash": {"minimumRingSize": 4096}},
                                       {"maglev": {"tableSize": 1009}}])
def test_consistent_hash_source_ip_is_sticky(pool: Pool, tmp_path: Path,
                                             algorithm: dict[str, Any]) -> None:
    ports = pool.backends(3)
    pool.start(config(tmp_path / "c.yaml", [endpoint(p) for p in ports],
                      {"trafficPolicy": {"loadBalancer": {"consistentHash": {
                          "useSourceIp": True, **algorithm}}}}))
    sources = [f"127.0.0.{i}" for i in range(2, 22)]
    first = {s: pool.connect(s) for s in sources}
    for _ in range(2):
        assert {s: pool.connect(s) for s in sources} == first
    assert len(set(first.values())) >= 2  # sources spread, each one sticks


def test_subset_by_labels_with_its_own_policy(pool: Pool, tmp_path: Path) -> None:
    ports = pool.backends(4)
    eps = [endpoint(p, labels={"version": "v1" if i < 2 else "v2"}) for i, p in enumerate(ports)]
    dr = {"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
          "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                      {"name": "v2", "labels": {"version": "v2"},
                       "trafficPolicy": {"loadBalancer": {"consistentHash": {
                           "useSourceIp": True}}}}]}
    pool.start(config(tmp_path / "c.yaml", eps, dr, subset="v2"))
    sources = [f"127.0.0.{i}" for i in range(30, 45)]
    first = {s: pool.connect(s) for s in sources}
    assert set(first.values()) <= set(ports[2:])  # only v2's endpoints
    assert {s: pool.connect(s) for s in sources} == first  # the subset's hash policy
    assert "RING_HASH" in pool.admin("/clusters")


def test_max_connections_overflow_closes_at_once(pool: Pool, tmp_path: Path) -> None:
    ports = pool.backends(1)
    gw = pool.start(config(tmp_path / "c.yaml", [endpoint(ports[0])],
                           {"trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 2}}}}))
    assert pool.connect(hold=True) == ports[0]
    assert pool.connect(hold=True) == ports[0]
    started = time.monotonic()
    assert pool.connect() is None  # the third: closed, never connected upstream
    assert time.monotonic() - started < 5
    lines = gw.wait_access_lines(1)
    assert any(" UO " in line for line in lines), lines
    stats = pool.admin("/stats")
    assert "upstream_cx_overflow: 1" in stats


def test_connect_timeout_from_the_destination_rule(pool: Pool, tmp_path: Path) -> None:
    # a loopback listener with a full accept queue: the connect hangs until our timeout
    with Blackhole() as (host, port):
        gw = pool.start(config(tmp_path / "c.yaml", [endpoint(port, address=host)],
                               {"trafficPolicy": {"connectionPool": {"tcp": {
                                   "connectTimeout": "300ms"}}}}))
        started = time.monotonic()
        assert pool.connect() is None
        assert time.monotonic() - started < 5
        assert any(" UF " in line for line in gw.wait_access_lines(1))


def dead_port() -> int:
    return free_port()  # nothing listens there: connection refused


OUTLIER = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "60s",
           "maxEjectionPercent": 100}


def test_outlier_detection_ejects_a_dead_endpoint_after_its_first_failure(
        pool: Pool, tmp_path: Path) -> None:
    live = pool.backends(2)
    dead = dead_port()
    gw = pool.start(config(tmp_path / "c.yaml", [endpoint(dead)] + [endpoint(p) for p in live],
                           {"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"},
                                              "outlierDetection": OUTLIER}}))
    results = [pool.connect(f"127.0.0.{2 + i % 5}") for i in range(30)]
    assert results.count(None) == 1, results  # the first failure, then never again
    assert set(results) - {None} == set(live)
    assert "ejected by outlier detection" in gw.text()
    clusters = pool.admin("/clusters?format=json")["clusters"]
    states = {e["port"]: e["status"] for e in clusters[0]["endpoints"]}
    assert states[dead] == "ejected" and states[live[0]] == "healthy"
    assert "ejections_enforced_total: 1" in pool.admin("/stats")


def test_ejected_endpoint_returns_after_base_ejection_time(pool: Pool, tmp_path: Path) -> None:
    live = pool.backends(1)
    late = free_port()
    od = dict(OUTLIER, baseEjectionTime="1s", interval="100ms")
    pool.start(config(tmp_path / "c.yaml", [endpoint(late), endpoint(live[0])],
                      {"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"},
                                         "outlierDetection": od}}))
    results = [pool.connect() for _ in range(6)]
    assert results.count(None) == 1
    server = socket.socket()  # the endpoint comes back to life
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", late))
    server.listen(16)
    try:
        deadline = time.monotonic() + 10
        reached = False
        while time.monotonic() < deadline and not reached:
            sock = socket.create_connection(("127.0.0.1", pool.port), timeout=5)
            server.settimeout(0.2)
            try:
                conn, _ = server.accept()
                conn.close()
                reached = True
            except socket.timeout:
                time.sleep(0.1)
            sock.close()
        assert reached, "the ejected endpoint never got traffic again"
    finally:
        server.close()


def test_connect_attempts_try_the_next_endpoint(pool: Pool, tmp_path: Path) -> None:
    live = pool.backends(1)
    gw = pool.start(config(tmp_path / "c.yaml", [endpoint(dead_port()), endpoint(live[0])],
                           {"metadata": {"annotations": {"tsgate.io/connect-attempts": "2"}},
                            "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}))
    assert [pool.connect() for _ in range(6)] == [live[0]] * 6
    assert "connect_attempts" in pool.admin("/stats")
    assert "connect attempts 2" in pool.admin("/clusters")
    assert gw.process.poll() is None


def test_connect_attempts_exhausted_is_uf_urx(pool: Pool, tmp_path: Path) -> None:
    gw = pool.start(config(tmp_path / "c.yaml", [endpoint(dead_port()), endpoint(dead_port())],
                           {"metadata": {"annotations": {"tsgate.io/connect-attempts": "2"}}}))
    assert pool.connect() is None
    assert any(" UF,URX " in line for line in gw.wait_access_lines(1))


def test_health_check_keeps_clients_off_a_dead_endpoint(pool: Pool, tmp_path: Path) -> None:
    live = pool.backends(1)
    dead = dead_port()
    hc = '{"interval": "200ms", "timeout": "500ms", "unhealthyThreshold": 1}'
    pool.start(config(tmp_path / "c.yaml", [endpoint(dead), endpoint(live[0])],
                      {"metadata": {"annotations": {"tsgate.io/health-check": hc}},
                       "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}))
    deadline = time.monotonic() + 10
    states: dict[int, str] = {}
    while time.monotonic() < deadline:
        clusters = pool.admin("/clusters?format=json")["clusters"]
        states = {e["port"]: e["status"] for e in clusters[0]["endpoints"]}
        if states.get(dead) == "unhealthy":
            break
        time.sleep(0.1)
    assert states == {dead: "unhealthy", live[0]: "healthy"}
    assert [pool.connect() for _ in range(10)] == [live[0]] * 10


def test_health_check_send_expect(pool: Pool, tmp_path: Path) -> None:
    def pong(conn: socket.socket) -> None:
        if conn.recv(64) == b"PING\r\n":
            conn.sendall(b"+PONG\r\n")
        else:
            ident(conn)

    def mute(conn: socket.socket) -> None:
        conn.recv(64)
        conn.sendall(b"-ERR\r\n")

    good, bad = ThreadedServer(pong), ThreadedServer(mute)
    pool.servers += [good, bad]
    hc = json.dumps({"interval": "200ms", "timeout": "1s", "unhealthyThreshold": 1,
                     "send": "PING\r\n", "expect": "+PONG"})
    pool.start(config(tmp_path / "c.yaml", [endpoint(good.port), endpoint(bad.port)],
                      {"metadata": {"annotations": {"tsgate.io/health-check": hc}}}))
    deadline = time.monotonic() + 10
    states: dict[int, str] = {}
    while time.monotonic() < deadline:
        clusters = pool.admin("/clusters?format=json")["clusters"]
        states = {e["port"]: e["status"] for e in clusters[0]["endpoints"]}
        if states.get(bad.port) == "unhealthy":
            break
        time.sleep(0.1)
    assert states == {good.port: "healthy", bad.port: "unhealthy"}


def test_tcp_keepalive_on_upstream_sockets(pool: Pool, tmp_path: Path) -> None:
    ports = pool.backends(1)
    pool.start(config(tmp_path / "c.yaml", [endpoint(ports[0])],
                      {"trafficPolicy": {"connectionPool": {"tcp": {"tcpKeepalive": {
                          "time": "77s", "interval": "5s", "probes": 4}}}}}))
    assert pool.connect(hold=True) == ports[0]
    out = subprocess.run(["ss", "-tnoH", "state", "established", "dst", f"127.0.0.1:{ports[0]}"],
                         capture_output=True, text=True, check=True).stdout
    assert "timer:(keepalive," in out, out
    # the first probe is due within TCP_KEEPIDLE (77 s), far beyond the system's 7200 s default
    remaining = out.split("timer:(keepalive,")[1].split(",")[0]  # "1min16sec", "59sec"
    match = re.fullmatch(r"(?:(\d+)min)?(?:([\d.]+)sec)?(?:(\d+)ms)?", remaining)
    assert match and remaining, remaining
    seconds = int(match.group(1) or 0) * 60 + float(match.group(2) or 0)
    assert 60 < seconds <= 77, out


def test_without_keepalive_upstream_sockets_have_no_timer(pool: Pool, tmp_path: Path) -> None:
    ports = pool.backends(1)
    pool.start(config(tmp_path / "c.yaml", [endpoint(ports[0])]))
    assert pool.connect(hold=True) == ports[0]
    out = subprocess.run(["ss", "-tnoH", "state", "established", "dst", f"127.0.0.1:{ports[0]}"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() and "keepalive" not in out


def test_dns_endpoint_resolved_off_the_reactor_and_shown(pool: Pool, tmp_path: Path) -> None:
    ports = pool.backends(1)
    pool.start(config(tmp_path / "c.yaml", [endpoint(ports[0], address="localhost")],
                      resolution="DNS"), extra=("--dns-refresh-rate", "1"))
    assert pool.connect() == ports[0]
    deadline = time.monotonic() + 10
    addresses: list[str] = []
    while time.monotonic() < deadline:
        clusters = pool.admin("/clusters?format=json")["clusters"]
        addresses = [e["address"] for e in clusters[0]["endpoints"]]
        if addresses != ["localhost"]:
            break
        time.sleep(0.1)
    assert addresses and "localhost" not in addresses  # resolved by the refresher
    assert pool.connect() == ports[0]
