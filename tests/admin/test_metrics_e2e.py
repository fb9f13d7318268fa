"""
The admin server of a real ``twistd -n tsgate`` process, with real traffic
through it to a real echo backend: the Prometheus scrape (parsed by
prometheus_client) must count exactly the connections and bytes the test
sent, and the JSON views must show a connection while it is open.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.backends import ThreadedServer, echo, pattern
from tests.support.gateway import GatewayProcess, free_port, wait_for_port, write_service_entries

pytestmark = pytest.mark.e2e

PORT = 31400
SIZES = (1, 1000, 65536, 300_000, 7)


def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def scrape(port: int) -> dict:
    status, body = get(port, "/stats/prometheus")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def total(families: dict, name: str, **labels: str) -> float:
    """
    Sum of the samples named ``name`` on the wire and matching ``labels``.
    The parser files counters under a family without ``_total`` and names
    their samples with it, so both spellings are looked for.
    """
    base = name[:-len("_total")] if name.endswith("_total") else name
    return sum(s.value for fam in families.values() for s in fam.samples
               if s.name in (base, base + "_total")
               and all(s.labels.get(k) == v for k, v in labels.items()))


def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, read the echo to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
        return bytes(got)


def recv_exactly(s: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = s.recv(n - len(got))
        assert chunk, "closed early"
        got += chunk
    return bytes(got)


@pytest.fixture
def gateway(tmp_path: Path):
    backend = ThreadedServer(echo)
    entries = write_service_entries(tmp_path / "backends.yaml",
                                    {"tcp-echo-service": (2701, backend.port)})
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump_all([
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
         "metadata": {"name": "echo-tcp-gateway"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": PORT, "name": "tcp-echo", "protocol": "TCP"},
                               "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
         "metadata": {"name": "tcp-echo-vs-from-gw"},
         "spec": {"hosts": ["*"], "gateways": ["echo-tcp-gateway"],
                  "tcp": [{"match": [{"port": PORT}],
                           "route": [{"destination": {"host": "tcp-echo-service",
                                                      "port": {"number": 2701}}}]}]}},
    ]))
    admin, ready = free_port(), free_port()
    proc = GatewayProcess(
        [str(routes), str(entries)], [PORT],
        extra=["--admin", f"tcp:{admin}:interface=127.0.0.1",
               "--readiness", f"tcp:{ready}:interface=127.0.0.1",
               "--drain-period", "2"],
    )
    wait_for_port(admin)
    wait_for_port(ready)
    yield proc, admin, ready
    proc.stop()
    backend.close()


def test_scrape_counts_the_traffic_sent(gateway):
    proc, admin, ready = gateway
    port = proc.port(PORT)
    route = "default/tcp-echo-vs-from-gw#tcp[0]"

    # one long-lived connection, visible in the JSON views while open
    held = socket.create_connection(("127.0.0.1", port), timeout=10)
    held.sendall(b"hello Sam\n")
    assert recv_exactly(held, 10) == b"hello Sam\n"
    status, body = get(admin, "/connections")
    conns = json.loads(body)
    assert status == 200 and conns["total"] == 1 and conns["by_route"] == {route: 1}
    (c,) = conns["connections"]
    assert c["bytes_received"] == 10 and c["bytes_sent"] == 10 and c["upstream"]
    listeners = json.loads(get(admin, "/listeners?format=json")[1])["listeners"]
    assert listeners[0]["tcp_route"]["active_connections"] == 1
    clusters = json.loads(get(admin, "/clusters?format=json")[1])["clusters"]
    assert [x["active_connections"] for x in clusters] == [1]
    assert get(ready, "/healthz/ready")[0] == 200

    sent = 10
    for size in SIZES:
        payload = pattern(size)
        assert exchange(port, payload) == payload
        sent += size
    held.shutdown(socket.SHUT_WR)
    assert held.recv(10) == b""
    held.close()
    opened = len(SIZES) + 1

    deadline = time.monotonic() + 10
    while True:
        fams = scrape(admin)
        closed = total(fams, "istio_tcp_connections_closed_total")
        if closed == opened or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    istio = {"reporter": "source", "request_protocol": "tcp",
             "destination_service_name": "tcp-echo-service"}
    assert total(fams, "istio_tcp_connections_opened_total", **istio) == opened
    assert total(fams, "istio_tcp_connections_closed_total", **istio) == opened
    assert total(fams, "istio_tcp_received_bytes_total", **istio) == sent
    assert total(fams, "istio_tcp_sent_bytes_total", **istio) == sent
    assert total(fams, "envoy_listener_downstream_cx_total") == opened
    assert total(fams, "envoy_listener_downstream_cx_active") == 0
    assert total(fams, "envoy_cluster_upstream_cx_total") == opened
    assert total(fams, "envoy_cluster_upstream_cx_active") == 0
    assert total(fams, "envoy_cluster_upstream_cx_connect_fail") == 0
    # Envoy's name and unit: milliseconds
    lengths = fams["envoy_listener_downstream_cx_length_ms"].samples
    (count,) = [s.value for s in lengths if s.name.endswith("_count")]
    assert count == opened
    assert {s.labels["le"] for s in lengths if s.name.endswith("_bucket")} >= {"1000.0", "+Inf"}

    status, body = get(admin, "/stats?filter=upstream_cx_total")
    assert status == 200
    assert body.decode().strip().endswith(f"upstream_cx_total: {opened}")


def test_post_drain_fails_readiness_then_sigterm_exits_zero(gateway):
    """
    POST /drain stops accepting and fails both readiness endpoints; the
    admin stays up, and a later SIGTERM (Kubernetes deleting the pod) still
    exits 0 promptly.
    """
    proc, admin, ready = gateway
    port = proc.port(PORT)
    assert get(admin, "/ready") == (200, b"LIVE\n")
    status, _ = get(admin, "/drain", "POST")
    assert status == 200
    assert get(ready, "/healthz/ready")[0] == 503
    assert get(admin, "/ready")[0] == 503
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    time.sleep(2.5)  # the drain period (2 s) is over
    assert proc.stop(timeout=10) == 0  # -9 would mean it hung and was killed
