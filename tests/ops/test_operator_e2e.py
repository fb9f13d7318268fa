"""
What an operator sees, against the real ``twistd tsgate`` process: the real
bound addresses on every screen, the metrics-only listener, warnings through
the (JSON) log at start and on reload, and the access log reopened on SIGUSR1.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.backends import ThreadedServer, echo
from tests.support.gateway import GatewayProcess, free_port, wait_for_port

pytestmark = pytest.mark.e2e


def config(path: Path, port: int, backend: int, annotation: str = "") -> Path:
    gateway: dict = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                     "metadata": {"name": "gw"},
                     "spec": {"selector": {"istio": "ingressgateway"},
                              "servers": [{"port": {"number": port, "name": "tcp",
                                                    "protocol": "TCP"}, "hosts": ["*"]}]}}
    if annotation:  # an unknown tsgate.io/ key: a warning, not an error
        gateway["metadata"]["annotations"] = {f"tsgate.io/{annotation}": "1"}
    docs = [
        gateway,
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "vs"},
         "spec": {"hosts": ["*"], "gateways": ["gw"],
                  "tcp": [{"route": [{"destination": {"host": "echo.test",
                                                      "port": {"number": 7}}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "se"},
         "spec": {"hosts": ["echo.test"], "resolution": "STATIC", "location": "MESH_INTERNAL",
                  "ports": [{"number": 7, "name": "tcp", "protocol": "TCP",
                             "targetPort": backend}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
    ]
    path.write_text(yaml.safe_dump_all(docs))
    return path


def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def echo_once(port: int, payload: bytes = b"ping\n") -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(100)
            assert chunk
            got += chunk
        assert got == payload


@pytest.fixture
def backend():
    server = ThreadedServer(echo)
    yield server
    server.close()


def test_bind_shows_the_real_address_everywhere_and_metrics_listener(backend, tmp_path):
    """--bind 127.0.0.1: /listeners, /config_dump, /status and the startup line say so."""
    port, admin, metrics = free_port(), free_port(), free_port()
    cfg = config(tmp_path / "c.yaml", port, backend.port)
    with GatewayProcess([str(cfg)], [], extra=[
            "--bind", "127.0.0.1", "--admin", f"tcp:{admin}:interface=127.0.0.1",
            "--metrics", f"tcp:{metrics}:interface=127.0.0.1"]) as gw:
        wait_for_port(admin)
        wait_for_port(metrics)
        want = f"127.0.0.1:{port}"
        summary = wait_for(lambda: [line for line in gw.output if " started: " in line],
                           "startup summary line")[0]
        assert "tsgate 0.1.0 started: 1 file(s), 1 listener(s) " in summary
        assert f"({want})" in summary and "1 route(s), 0 warning(s)" in summary
        assert f"on {want} " in gw.text()  # the "tsgate listening" line
        assert get(admin, "/listeners")[1].decode() == f"0.0.0.0_{port}::{want}\n"
        (view,) = json.loads(get(admin, "/listeners?format=json")[1])["listeners"]
        assert view["address"] == want
        dump = json.loads(get(admin, "/config_dump")[1])
        assert [li["address"] for li in dump["table"]["listeners"]] == [want]
        status = json.loads(get(admin, "/status")[1])
        assert [li["address"] for li in status["listeners"]] == [want]
        assert status["version"] == "0.1.0" and status["uptime"] >= 0

        # the metrics listener: every counter at 0 before any traffic, read-only
        code, body = get(metrics, "/stats/prometheus")
        assert code == 200
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        for name in ("envoy_listener_no_filter_chain_match", "tsgate_config_reload_failed",
                     "envoy_cluster_upstream_cx_connect_fail", "istio_tcp_connections_opened"):
            assert [s.value for s in fams[name].samples] == [0], name
        assert fams["tsgate_build_info"].samples[0].labels["version"] == "0.1.0"
        assert fams["process_resident_memory_bytes"].samples[0].value > 0
        assert not any(n.startswith("envoy_config") or n.endswith("_length_seconds")
                       for n in fams)
        helps = [line for line in body.decode().splitlines() if line.startswith("# HELP ")]
        assert helps and not [h for h in helps if " tsgate " in h and "." in h.split()[3]], \
            "no placeholder HELP (`tsgate <stat.name>`)"
        assert get(metrics, "/config_dump")[0] == 404
        assert get(metrics, "/drain", "POST")[0] == 404
        assert get(metrics, "/stats/prometheus", "POST")[0] == 405

        echo_once(port)
        body = wait_for(lambda: (b := get(metrics, "/stats/prometheus")[1]) and
                        b'envoy_listener_downstream_cx_total{listener_address="0.0.0.0_'
                        + str(port).encode() + b'"} 1' in b and b, "counted connection")
        assert b"envoy_listener_downstream_cx_length_ms_count" in body


def test_warnings_logged_as_json_at_start_and_on_reload(backend, tmp_path):
    port, admin = free_port(), free_port()
    cfg = config(tmp_path / "c.yaml", port, backend.port, annotation="inspect-timout")
    with GatewayProcess([str(cfg)], [], extra=[
            "--bind", "127.0.0.1", "--log-format", "json",
            "--admin", f"tcp:{admin}:interface=127.0.0.1"]) as gw:
        wait_for_port(admin)

        def warnings(when: str) -> list[dict]:
            found = []
            for line in list(gw.output):
                if line.startswith("{"):
                    record = json.loads(line)
                    if record["level"] == "warn" and f"config warning ({when})" in \
                            record["message"]:
                        found.append(record)
            return found

        (start,) = wait_for(lambda: warnings("startup"), "startup warning as JSON")
        assert "tsgate.io/inspect-timout" in start["message"]
        assert not [line for line in gw.output if line.startswith(str(cfg))], \
            "no plain-text warning beside the JSON log"
        config(cfg, port, backend.port, annotation="observerz")
        gw.signal(signal.SIGHUP)
        (again,) = wait_for(lambda: warnings("reload"), "reload warning as JSON")
        assert "tsgate.io/observerz" in again["message"]
        status = json.loads(get(admin, "/status")[1])
        assert status["last_reload"]["ok"] is True
        assert status["last_reload"]["warnings"] == 1


def test_sigusr1_reopens_the_access_log(backend, tmp_path):
    """logrotate moves the file, then postrotate sends SIGUSR1: new lines go to a new file."""
    port = free_port()
    log = tmp_path / "access.log"
    cfg = config(tmp_path / "c.yaml", port, backend.port)
    with GatewayProcess([str(cfg)], [], access_log=log, extra=["--bind", "127.0.0.1"]) as gw:
        echo_once(port)
        gw.wait_access_lines(1)
        rotated = tmp_path / "access.log.1"
        log.rename(rotated)
        gw.signal(signal.SIGUSR1)
        wait_for(lambda: "access log reopened" in gw.text(), "reopen logged")
        assert log.exists()
        echo_once(port)
        echo_once(port)
        lines = gw.wait_access_lines(2)
        assert len(rotated.read_text().splitlines()) == 1
        assert all(f"127.0.0.1:{port}" in line for line in lines)
