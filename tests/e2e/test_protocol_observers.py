"""
The built-in observers inside the real gateway (``twistd -n tsgate``),
selected Istio's way by the Gateway port's name, with real clients and
servers: redis-benchmark and redis-cli against redis-server on a
``redis-cache`` port, psql against the installed PostgreSQL on a ``postgres-main``
port. The counters read from the admin ``/stats`` endpoint and the access
log attributes are what the traffic sent.
"""

from __future__ import annotations

import http.client
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.gateway import GatewayProcess, free_port, wait_for_port, write_service_entries
from tests.support.postgres import start_postgres

pytestmark = pytest.mark.e2e


def tcp_gateway(path: Path, port: int, port_name: str, backend: str, backend_port: int) -> Path:
    path.write_text(yaml.safe_dump_all([
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": port, "name": port_name, "protocol": "TCP"},
                               "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "vs"},
         "spec": {"hosts": ["*"], "gateways": ["gw"],
                  "tcp": [{"route": [{"destination": {"host": backend,
                                                      "port": {"number": backend_port}}}]}]}},
    ]))
    return path


def stats(admin: int, prefix: str) -> dict[str, float]:
    """``/stats`` lines of one protocol, by name without the listener part."""
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        conn.request("GET", f"/stats?filter=^{prefix}\\.")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in body.splitlines():
        name, _, value = line.rpartition(": ")
        # redis.0.0.0.0_6379.command.get -> command.get
        suffix = name.split("_", 1)[1].split(".", 1)[1] if "_" in name else name
        if value.startswith("count="):  # a histogram: keep its sample count
            value = value.split()[0].partition("=")[2]
            suffix += ".count"
        out[suffix] = out.get(suffix, 0) + float(value)
    return out


def wait_stats(admin: int, prefix: str, key: str, value: float) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while True:
        found = stats(admin, prefix)
        if found.get(key) == value or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture
def redis_server() -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port)
            yield port
        finally:
            server.terminate()
            server.wait(10)


def test_redis_observer_counts_real_traffic(redis_server, tmp_path):
    """redis-benchmark SET/GET (pipelined) and a failing INCR through a redis-cache port."""
    entries = write_service_entries(tmp_path / "be.yaml", {"redis-backend": (6379, redis_server)})
    routes = tcp_gateway(tmp_path / "gw.yaml", 6379, "redis-cache", "redis-backend", 6379)
    admin = free_port()
    with GatewayProcess([str(routes), str(entries)], [6379],
                        extra=["--admin", f"tcp:{admin}:interface=127.0.0.1"]) as gw:
        wait_for_port(admin)
        port = gw.port(6379)
        bench = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-n", "200", "-c", "1", "-P", "7", "-q",
             "-t", "set,get"], capture_output=True, text=True, timeout=60)
        assert bench.returncode == 0, bench.stderr
        subprocess.run(["redis-cli", "-p", str(port), "SET", "word", "hello"], check=True,
                       capture_output=True, timeout=10)
        incr = subprocess.run(["redis-cli", "-p", str(port), "INCR", "word"],
                              capture_output=True, text=True, timeout=10)
        assert "ERR" in incr.stdout
        counts = wait_stats(admin, "redis", "command.incr", 1)
        assert counts["command.set"] == 203 + 1  # -n 200 rounded up to whole pipelines of 7
        assert counts["command.get"] == 203
        assert counts["command.incr"] == 1
        assert counts["errors"] == counts["error.err"] == 1
        assert counts["replies"] == counts["commands"]
        assert "decode_error" not in counts
        # Access-log lines are written at close and read from the gateway's
        # output by a thread: wait for all five connections' lines.
        lines = gw.wait_access_lines(5)
        assert any(line.rstrip().endswith("command=incr") for line in lines), lines


def test_postgres_observer_counts_real_traffic(tmp_path):
    """psql (no TLS) through a postgres-main port: startup attributes in the log, counters."""
    pg = start_postgres(tmp_path, free_port(), "pg1.example.test")
    try:
        entries = write_service_entries(tmp_path / "be.yaml", {"pg-backend": (5432, pg.port)})
        routes = tcp_gateway(tmp_path / "gw.yaml", 5432, "postgres-main", "pg-backend", 5432)
        admin = free_port()
        with GatewayProcess([str(routes), str(entries)], [5432],
                            extra=["--admin", f"tcp:{admin}:interface=127.0.0.1"]) as gw:
            wait_for_port(admin)
            dsn = (f"host=127.0.0.1 port={gw.port(5432)} user=postgres dbname=postgres "
                   "sslmode=disable gssencmode=disable application_name=e2e-observer")
            result = subprocess.run(
                ["psql", "-X", "-A", "-t", dsn, "-c", "SELECT name FROM whoami",
                 "-c", "SELECT * FROM no_such_table"],
                capture_output=True, text=True, timeout=30)
            assert result.stdout.strip() == "pg1"
            assert "no_such_table" in result.stderr
            counts = wait_stats(admin, "postgres", "frontend.terminate", 1)
            assert counts["sessions_unencrypted"] == 1
            assert counts["frontend.query"] == 2
            assert counts["statements_select"] == 1
            assert counts["errors.sqlstate_class.42"] == 1
            assert "decode_error" not in counts
            # the timed observer's query latency histogram, one sample per query
            assert counts["query.duration.count"] == 2
            line = gw.wait_access_lines(1)[-1]
            for attribute in ("user=postgres", "database=postgres", "app_name=e2e-observer"):
                assert attribute in line, line
    finally:
        pg.stop()
