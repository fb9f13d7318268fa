"""
How connections end, through a real ``twistd -n tsgate`` on real sockets,
and what the access log and the Prometheus scrape say about each ending.

Each test names in its docstring the one-line bug it was proven against
(planted in the product, seen to fail, reverted; see docs/testing.md).
Traffic here is asymmetric on purpose: a backend that sends more than it
receives, so bytes sent and bytes received cannot be confused.

One gateway process serves every case on its own port and cluster:

=========  ==========================================================
port       destination
=========  ==========================================================
7401       ``asym``: reads the request to EOF, waits, answers 3x + 1
7402       ``limited``: DestinationRule maxConnections 2; says hi, holds
7403       ``dead``: nothing listens (UF, refused)
7404       ``blackhole``: a full accept queue (SYNs dropped); its
           DestinationRule says connectTimeout 30s, ``--connect-timeout 1``
7405       ``noep``: a STATIC ServiceEntry without endpoints (UH)
7406       TLS passthrough for one SNI only, no TCP route (NR)
7407       ``talker``: only the server talks; idleTimeout 2s
7408       ``silent``: nothing talks; idleTimeout 2s
7409       ``held``: echo, for the periodic byte-counter flush
=========  ==========================================================
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.backends import ThreadedServer, echo, pattern
from tests.support.gateway import GatewayProcess, free_port, wait_for_port

pytestmark = pytest.mark.e2e

ASYM, LIMITED, DEAD, BLACKHOLE, NOEP, SNI_ONLY, TALKER, SILENT, HELD = range(7401, 7410)
PORTS = (ASYM, LIMITED, DEAD, BLACKHOLE, NOEP, SNI_ONLY, TALKER, SILENT, HELD)
MAX_CONNECTIONS = 2
#: The client address of the access-log test: not the gateway's own 127.0.0.1,
#: so a swapped local/remote address shows.
CLIENT_IP = "127.0.0.7"
ASYM_DELAY = 0.4
TICKS, TICK = 14, 0.25  # the talker: 14 bytes, one per 0.25 s (3.5 s > idle timeout 2 s)


# -- backends -----------------------------------------------------------------


def asymmetric(conn: socket.socket) -> None:
    """Read to EOF, wait ASYM_DELAY, answer 3x the bytes read plus one, close."""
    total = 0
    while chunk := conn.recv(65536):
        total += len(chunk)
    time.sleep(ASYM_DELAY)
    conn.sendall(pattern(3 * total + 1))


class Holder:
    """Says ``hi``, then holds the connection until the client closes it."""

    def __init__(self) -> None:
        self.accepted = 0

    def __call__(self, conn: socket.socket) -> None:
        self.accepted += 1
        conn.sendall(b"hi\n")
        while conn.recv(65536):
            pass


def talker(conn: socket.socket) -> None:
    """Only the server talks: one byte per TICK, TICKS times, then close."""
    for _ in range(TICKS):
        conn.sendall(b".")
        time.sleep(TICK)


def silent(conn: socket.socket) -> None:
    while conn.recv(65536):
        pass


class Blackhole:
    """A listening socket whose accept queue is full: further SYNs are dropped."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", self.port))
            raise AssertionError("the blackhole accepted a connection")
        except socket.timeout:
            pass
        finally:
            probe.close()

    def close(self) -> None:
        self.filler.close()
        self.sock.close()


# -- configuration ----------------------------------------------------------------


def config(path: Path, backend_ports: dict[str, Optional[int]], dead_port: int) -> Path:
    """One Gateway, a VirtualService, ServiceEntry and DestinationRule per case."""
    servers: list[dict[str, Any]] = []
    docs: list[dict[str, Any]] = []
    tcp_policy: dict[str, dict[str, Any]] = {
        "limited": {"maxConnections": MAX_CONNECTIONS},
        "blackhole": {"connectTimeout": "30s"},
        "talker": {"idleTimeout": "2s"},
        "silent": {"idleTimeout": "2s"},
    }
    for port, name in zip(PORTS, ("asym", "limited", "dead", "blackhole", "noep", None,
                                  "talker", "silent", "held")):
        if name is None:
            continue
        servers.append({"port": {"number": port, "name": f"tcp-{name}", "protocol": "TCP"},
                        "hosts": ["*"]})
        host = f"{name}.svc.local"
        docs.append({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": ["*"], "gateways": ["close-gw"],
                     "tcp": [{"match": [{"port": port}],
                              "route": [{"destination": {"host": host,
                                                         "port": {"number": 9000}}}]}]}})
        target = dead_port if name == "dead" else backend_ports.get(name)
        entry: dict[str, Any] = {
            "hosts": [host], "location": "MESH_INTERNAL", "resolution": "STATIC",
            "ports": [{"number": 9000, "name": "tcp", "protocol": "TCP",
                       **({"targetPort": target} if target else {})}],
        }
        if name != "noep":
            entry["endpoints"] = [{"address": "127.0.0.1"}]
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                     "metadata": {"name": name}, "spec": entry})
        if name in tcp_policy:
            docs.append({
                "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": name},
                "spec": {"host": host, "trafficPolicy": {
                    "connectionPool": {"tcp": tcp_policy[name]}}}})
    servers.append({"port": {"number": SNI_ONLY, "name": "tls-only", "protocol": "TLS"},
                    "hosts": ["a.example.test"], "tls": {"mode": "PASSTHROUGH"}})
    docs.append({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "sni-only"},
        "spec": {"hosts": ["a.example.test"], "gateways": ["close-gw"],
                 "tls": [{"match": [{"port": SNI_ONLY, "sniHosts": ["a.example.test"]}],
                          "route": [{"destination": {"host": "asym.svc.local",
                                                     "port": {"number": 9000}}}]}]}})
    docs.insert(0, {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                    "metadata": {"name": "close-gw"},
                    "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}})
    path.write_text(yaml.safe_dump_all(docs))
    return path


class Setup:
    def __init__(self, gw: GatewayProcess, admin: int, holder: Holder, blackhole: Blackhole,
                 routes: Path, extra: Path) -> None:
        self.gw, self.admin, self.holder, self.blackhole = gw, admin, holder, blackhole
        self.routes, self.extra = routes, extra

    def port(self, config_port: int) -> int:
        return self.gw.port(config_port)

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.gw.access_lines()]

    def wait_record(self, client: tuple[str, int], timeout: float = 10.0) -> dict[str, Any]:
        """The JSON access-log record of the connection from ``client``."""
        wanted = f"{client[0]}:{client[1]}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.json_lines():
                if record["downstream_remote_address"] == wanted:
                    return record
            time.sleep(0.05)
        raise TimeoutError(f"no access log record from {wanted}: {self.gw.access_lines()}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("close-paths")
    holder = Holder()
    servers = {"asym": ThreadedServer(asymmetric), "limited": ThreadedServer(holder),
               "talker": ThreadedServer(talker), "silent": ThreadedServer(silent),
               "held": ThreadedServer(echo)}
    blackhole = Blackhole()
    ports: dict[str, Optional[int]] = {name: s.port for name, s in servers.items()}
    ports["blackhole"] = blackhole.port
    routes = config(tmp / "routes.yaml", ports, free_port())
    extra = tmp / "extra.yaml"
    extra.write_text("")
    admin = free_port()
    log = tmp / "access.json"
    gw = GatewayProcess(
        [str(routes), str(extra)], PORTS, access_log=log,
        extra=["--access-log-format", "json", "--connect-timeout", "1",
               "--admin", f"tcp:{admin}:interface=127.0.0.1", "--watch-interval", "0",
               "--drain-period", "1"],
    )
    try:
        wait_for_port(admin)
        yield Setup(gw, admin, holder, blackhole, routes, extra)
    finally:
        gw.stop()
        for server in servers.values():
            server.close()
        blackhole.close()


# -- helpers ------------------------------------------------------------------------------


def admin_request(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scrape(port: int) -> list[Any]:
    status, body = admin_request(port, "/stats/prometheus")
    assert status == 200
    return [s for family in text_string_to_metric_families(body.decode())
            for s in family.samples]


def metric(samples: list[Any], name: str, **labels: str) -> float:
    """The sum of the samples of counter ``name`` (with or without ``_total``) matching labels."""
    base = name[:-len("_total")] if name.endswith("_total") else name
    return sum(s.value for s in samples if s.name in (base, base + "_total")
               and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_metric(port: int, name: str, want: float, timeout: float = 10.0,
                **labels: str) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if metric(samples, name, **labels) == want or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def read_to_eof(sock: socket.socket) -> bytes:
    got = bytearray()
    while chunk := sock.recv(65536):
        got += chunk
    return bytes(got)


def closed_at_once(port: int, timeout: float = 10.0) -> tuple[str, int]:
    """Connect, expect EOF without any byte; the client address."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        client = s.getsockname()[:2]
        assert s.recv(100) == b""
    return client


def service(name: str) -> dict[str, str]:
    return {"reporter": "source", "destination_service": f"{name}.svc.local",
            "request_protocol": "tcp"}


# -- tests -----------------------------------------------------------------------------------


def test_access_log_with_asymmetric_traffic(setup: Setup) -> None:
    """
    Catches: downstream local/remote addresses swapped; the duration logged in
    seconds instead of milliseconds; ``bytes_sent`` logged as ``bytes_received``
    (or the reverse). The client speaks from 127.0.0.7, the gateway listens on
    127.0.0.1; the backend answers 3x + 1 what it got, after 0.4 s.
    """
    port = setup.port(ASYM)
    request = pattern(1000)
    with socket.socket() as s:
        s.settimeout(10)
        s.bind((CLIENT_IP, 0))
        s.connect(("127.0.0.1", port))
        client = s.getsockname()[:2]
        started = time.monotonic()
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        answer = read_to_eof(s)
        elapsed = time.monotonic() - started
    assert answer == pattern(3001)
    record = setup.wait_record(client)
    assert record["downstream_remote_address"] == f"{CLIENT_IP}:{client[1]}"
    assert record["downstream_local_address"] == f"127.0.0.1:{port}"
    assert record["bytes_received"] == 1000  # from the client
    assert record["bytes_sent"] == 3001  # to the client
    assert int(ASYM_DELAY * 1000) <= record["duration"] <= elapsed * 1000 + 1000
    assert record["response_flags"] is None
    assert record["upstream_cluster"] == "outbound|9000||asym.svc.local"


def test_metrics_with_asymmetric_traffic(setup: Setup) -> None:
    """
    Catches: Istio's sent and received byte counters swapped or fed the same
    count (echo backends make them equal, so only asymmetric traffic tells).
    """
    port = setup.port(ASYM)
    before = scrape(setup.admin)
    sizes = (1, 5000, 70_000)
    for size in sizes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(pattern(size))
            s.shutdown(socket.SHUT_WR)
            assert len(read_to_eof(s)) == 3 * size + 1
    labels = service("asym")
    closed = metric(before, "istio_tcp_connections_closed_total", **labels) + len(sizes)
    after = wait_metric(setup.admin, "istio_tcp_connections_closed_total", closed, **labels)
    assert metric(after, "istio_tcp_connections_closed_total", **labels) == closed

    def delta(name: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("istio_tcp_received_bytes_total") == sum(sizes)
    assert delta("istio_tcp_sent_bytes_total") == sum(3 * size + 1 for size in sizes)
    assert delta("istio_tcp_connections_opened_total") == len(sizes)


def test_max_connections_overflow_is_uo(setup: Setup) -> None:
    """
    Catches: the maxConnections check disabled, or off by one either way
    (``>`` for ``>=``, or ``max - 1``): exactly 2 connections reach the
    backend, the 3rd is closed at once with ``UO`` (access log, overflow stat,
    ``istio_tcp_connections_closed_total{response_flags="UO"}``) and never
    reaches it; once one closes, a new one is let through (the active count
    goes down again).
    """
    port = setup.port(LIMITED)
    held = []
    for _ in range(MAX_CONNECTIONS):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert s.recv(3) == b"hi\n"
        held.append(s)
    accepted = setup.holder.accepted
    client = closed_at_once(port)
    record = setup.wait_record(client)
    assert record["response_flags"] == "UO"
    assert record["upstream_cluster"] == "outbound|9000||limited.svc.local"
    assert setup.holder.accepted == accepted == MAX_CONNECTIONS
    samples = wait_metric(setup.admin, "istio_tcp_connections_closed_total", 1,
                          response_flags="UO", **service("limited"))
    assert metric(samples, "istio_tcp_connections_closed_total", response_flags="UO",
                  **service("limited")) == 1
    assert metric(samples, "envoy_cluster_upstream_cx_overflow",
                  cluster_name="outbound|9000||limited.svc.local") == 1
    held.pop().close()
    deadline = time.monotonic() + 10
    while True:  # the close reaches the gateway asynchronously
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            if s.recv(3) == b"hi\n":
                break
        assert time.monotonic() < deadline, "a slot never freed up"
        time.sleep(0.1)
    for s in held:
        s.close()


def test_connect_timeout_option_is_honoured(setup: Setup) -> None:
    """
    Catches: ``--connect-timeout`` ignored (the DestinationRule's 30 s, or
    the default 10 s, used instead). The upstream drops SYNs; with
    ``--connect-timeout 1`` the client is closed after about a second, ``UF``.
    """
    port = setup.port(BLACKHOLE)
    started = time.monotonic()
    client = closed_at_once(port, timeout=15)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5, elapsed
    record = setup.wait_record(client)
    assert record["response_flags"] == "UF"
    assert record["upstream_transport_failure_reason"] == "connect_timeout"
    assert record["upstream_host"] == f"127.0.0.1:{setup.blackhole.port}"


def test_every_close_is_counted_with_its_response_flags(setup: Setup) -> None:
    """
    Catches: ``istio_tcp_connections_closed_total`` counting only connections
    that reached their upstream. Connections refused (UF), to a cluster without
    endpoints (UH) and without a route (NR) are each counted closed with their
    flag, and counted opened, so opened minus closed stays the open count.
    """
    before = scrape(setup.admin)
    cases = ((DEAD, "UF", service("dead")), (NOEP, "UH", service("noep")),
             (SNI_ONLY, "NR", {"destination_service": "unknown", "reporter": "source"}))
    for port, flag, _labels in cases:
        client = closed_at_once(setup.port(port)) if port != SNI_ONLY else None
        if client is None:  # plaintext on a TLS-only port: no chain
            with socket.create_connection(("127.0.0.1", setup.port(port)), timeout=10) as s:
                client = s.getsockname()[:2]
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert read_to_eof(s) == b""
        assert setup.wait_record(client)["response_flags"] == flag
    for _port, flag, labels in cases:
        want = metric(before, "istio_tcp_connections_closed_total",
                      response_flags=flag, **labels) + 1
        samples = wait_metric(setup.admin, "istio_tcp_connections_closed_total", want,
                              response_flags=flag, **labels)
        assert metric(samples, "istio_tcp_connections_closed_total",
                      response_flags=flag, **labels) == want, flag
        opened = metric(samples, "istio_tcp_connections_opened_total", **labels)
        assert opened - metric(before, "istio_tcp_connections_opened_total", **labels) == 1
    samples = scrape(setup.admin)
    assert metric(samples, "istio_tcp_connections_closed_total", response_flags="UF",
                  destination_service_name="dead.svc.local") == 0  # labels are Istio's
    assert metric(samples, "istio_tcp_connections_closed_total", response_flags="UF",
                  destination_service_name="dead") >= 1


def test_server_only_traffic_is_activity(setup: Setup) -> None:
    """
    Catches: upstream-to-client bytes not counted as activity for the idle
    timeout. The server sends a byte every 0.25 s for 3.5 s and the client
    never speaks; with idleTimeout 2s the stream must still arrive whole. A
    silent connection on the same timeout is cut (the timeout does work).
    """
    with socket.create_connection(("127.0.0.1", setup.port(TALKER)), timeout=10) as s:
        client = s.getsockname()[:2]
        assert read_to_eof(s) == b"." * TICKS
    record = setup.wait_record(client)
    assert record["connection_termination_details"] is None, record
    assert record["bytes_sent"] == TICKS and record["bytes_received"] == 0
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", setup.port(SILENT)), timeout=10) as s:
        client = s.getsockname()[:2]
        assert s.recv(10) == b""
    assert 1.9 <= time.monotonic() - started < 6
    record = setup.wait_record(client)
    assert record["connection_termination_details"] == "tcp_session_idle_timeout"


def test_byte_counters_move_while_the_connection_is_open(setup: Setup) -> None:
    """
    Catches: the periodic byte-counter flush doing nothing (counters only
    moving at close). Istio flushes every 5 s (tcp_reporting_duration); the
    connection stays open while the scrape is polled for 12 s.
    """
    labels = service("held")
    with socket.create_connection(("127.0.0.1", setup.port(HELD)), timeout=10) as s:
        s.sendall(pattern(1234))
        got = b""
        while len(got) < 1234:
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        samples = wait_metric(setup.admin, "istio_tcp_received_bytes_total", 1234,
                              timeout=12, **labels)
        assert metric(samples, "istio_tcp_received_bytes_total", **labels) == 1234
        assert metric(samples, "istio_tcp_sent_bytes_total", **labels) == 1234
        assert metric(samples, "istio_tcp_connections_closed_total", **labels) == 0
        s.sendall(b"more")  # still open: the relay carries on
        assert s.recv(10) == b"more"


def test_reload_failed_counts_failures_only(setup: Setup) -> None:
    """
    Catches: ``config.reload_failed`` counting successes (or both). A good
    reload moves only ``reload_success``; a rejected one only ``reload_failed``,
    and the running config stays (a connection still gets through).
    """
    before = scrape(setup.admin)
    success = metric(before, "tsgate_config_reload_success")
    failed = metric(before, "tsgate_config_reload_failed")
    assert admin_request(setup.admin, "/reload", "POST")[0] == 200
    samples = scrape(setup.admin)
    assert metric(samples, "tsgate_config_reload_success") == success + 1
    assert metric(samples, "tsgate_config_reload_failed") == failed
    setup.extra.write_text(yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "broken"},
        "spec": {"hosts": ["*"], "tcp": [{"route": [{"destination": {"port": "x"}}]}]}}))
    try:
        status, body = admin_request(setup.admin, "/reload", "POST")
        assert status == 400, body
        samples = scrape(setup.admin)
        assert metric(samples, "tsgate_config_reload_success") == success + 1
        assert metric(samples, "tsgate_config_reload_failed") == failed + 1
    finally:
        setup.extra.write_text("")
    with socket.create_connection(("127.0.0.1", setup.port(HELD)), timeout=10) as s:
        s.sendall(b"ok")
        assert s.recv(10) == b"ok"

