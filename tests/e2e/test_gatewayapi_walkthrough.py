"""
The seed walkthrough (Istio in Action ch. 4) written with the Kubernetes
Gateway API (examples/gatewayapi/), against the real gateway process with real
clients (nc, curl, Python ssl), as tests/e2e/test_seed_walkthrough.py does for
the book's Istio YAML; and examples/gatewayapi/walkthrough.py run as a user
would run it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.e2e.conftest import EXAMPLE, HOSTS, ROOT, Backends, seed
from tests.support.gateway import GatewayProcess, free_port
from tests.support.streams import recv_until

GATEWAY_API = ROOT / "examples" / "gatewayapi"
FILES = [seed("echo.yaml"), str(GATEWAY_API / "gateway.yaml"),
         str(GATEWAY_API / "tcp-echo-route.yaml"), str(GATEWAY_API / "tls-routes.yaml")]
BANNER_FIRST_LINE = b"Welcome, you are connected to node minikube.\n"


@pytest.fixture(scope="module")
def admin_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway(backends: Backends, admin_port: int):
    with GatewayProcess(FILES + [str(backends.service_entries)], ports=[31400],
                        extra=["--inspect-timeout", "1",
                               "--admin", f"tcp:{admin_port}:interface=127.0.0.1"]) as gw:
        yield gw


def test_echo_banner_and_echo_through_the_tcproute(gateway: GatewayProcess) -> None:
    """telnet/nc to 31400: no ClientHello, so after the inspect timeout the TCPRoute."""
    out = subprocess.run(["nc", "-N", "127.0.0.1", str(gateway.port(31400))],
                         input=b"hello Sam\n", capture_output=True, timeout=20)
    assert out.stdout.startswith(BANNER_FIRST_LINE)
    assert out.stdout.endswith(b"hello Sam\n")
    with socket.create_connection(("127.0.0.1", gateway.port(31400)), timeout=10) as s:
        client = s.getsockname()
        assert recv_until(s, b"Service default.\n").startswith(BANNER_FIRST_LINE)
        s.sendall(b"abc\n")
        assert recv_until(s, b"abc\n").endswith(b"abc\n")
    line = gateway.wait_access_line_from(client)
    assert "outbound|2701||tcp-echo-service.default.svc.cluster.local" in line
    assert line.split()[23] == "tcp->default/tcp-echo-route#tcproute[0]"


@pytest.mark.parametrize("index", [0, 1])
def test_curl_reaches_each_tls_service_by_sni(gateway: GatewayProcess, backends: Backends,
                                              index: int) -> None:
    host, port = HOSTS[index], gateway.port(31400)
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", f"https://{host}:{port}/",
         "--cacert", str(backends.certs[index].ca_chain),
         "--resolve", f"{host}:{port}:127.0.0.1"],
        capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["name"] == f"simple-tls-service-{index + 1}"
    assert answer["body"] == f"Hello from simple-tls-service-{index + 1}!!!"


@pytest.mark.parametrize("index", [0, 1])
def test_passthrough_shows_the_backend_certificate(gateway: GatewayProcess,
                                                    backends: Backends, index: int) -> None:
    host = HOSTS[index]
    context = ssl.create_default_context(cafile=str(backends.certs[index].ca_chain))
    raw = socket.create_connection(("127.0.0.1", gateway.port(31400)), timeout=10)
    with context.wrap_socket(raw, server_hostname=host) as s:
        leaf = ssl.PEM_cert_to_DER_cert(backends.certs[index].leaf_cert.read_text())
        assert s.getpeercert(binary_form=True) == leaf
    trace = f" {host} tls:{host}->default/simple-sni-{index + 1}-route#tlsroute[0]"
    deadline = time.monotonic() + 10
    while not any(trace in line for line in gateway.access_lines()):
        assert time.monotonic() < deadline, gateway.access_lines()
        time.sleep(0.05)


def test_unknown_sni_is_closed(gateway: GatewayProcess) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", gateway.port(31400)), timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with context.wrap_socket(raw, server_hostname="unknown.istioinaction.io") as s:
            s.recv(1)


def test_config_dump_shows_the_status_live(gateway: GatewayProcess, admin_port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/config_dump", timeout=10) as r:
        dump = json.load(r)
    status = dump["config"]["gateway_api"]
    (gw,) = status["gateways"]
    assert gw["resource"] == "Gateway default/istioinaction-gateway"
    assert {c["type"]: c["reason"] for c in gw["conditions"]} == \
        {"Accepted": "Accepted", "Programmed": "Programmed"}
    assert [(li["name"], li["attachedRoutes"]) for li in gw["listeners"]] == \
        [("tcp-echo", 1), ("tcp-sni-1", 1), ("tcp-sni-2", 1)]
    routes = {r["resource"]: r["parents"][0]["conditions"] for r in status["routes"]}
    assert set(routes) == {"TCPRoute default/tcp-echo-route",
                           "TLSRoute default/simple-sni-1-route",
                           "TLSRoute default/simple-sni-2-route"}
    assert all(c["status"] == "True" for conds in routes.values() for c in conds)


def test_the_gateway_api_walkthrough_script(tmp_path) -> None:
    """``python examples/gatewayapi/walkthrough.py``: the book's commands work, SIGTERM ends it."""
    port, echo, s1, s2 = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, str(GATEWAY_API / "walkthrough.py"), "--workdir", str(tmp_path),
         "--port", str(port), "--echo-port", str(echo), "--service-ports", str(s1), str(s2),
         "--gateway-arg=--admin=none", "--gateway-arg=--readiness=none"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(EXAMPLE))
    try:
        commands = []
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("curl "):
                commands.append(line.split())
            if line.startswith("Press Ctrl-C"):
                break
        assert len(commands) == 2, commands
        out = subprocess.run(["nc", "-N", "127.0.0.1", str(port)], input=b"hello Sam\n",
                             capture_output=True, timeout=20)
        assert out.stdout.startswith(BANNER_FIRST_LINE) and out.stdout.endswith(b"hello Sam\n")
        for n, command in enumerate(commands, start=1):
            got = subprocess.run(command[:1] + ["-sS", "--max-time", "10"] + command[1:],
                                 capture_output=True, timeout=30)
            assert got.returncode == 0, got.stderr
            assert json.loads(got.stdout)["name"] == f"simple-tls-service-{n}"
        assert re.search(r"gateway-api|tcp-echo-route", " ".join(
            p.name for p in (tmp_path / "config").iterdir()))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_reload_updates_routes_and_status(tmp_path) -> None:
    """A TLSRoute added and SIGHUP: traffic and /config_dump's status follow, live."""
    from tests.support.backends import ThreadedServer

    def identity(name: bytes):
        def handler(conn: socket.socket) -> None:
            conn.sendall(name)
            while conn.recv(4096):
                pass

        return handler

    one = ThreadedServer(identity(b"one\n"))
    config = tmp_path / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: mine
  listeners:
  - {{name: tcp, protocol: TCP, port: 9000}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: first}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: one, port: 1}}]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: one}}
spec:
  hosts: [one.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 1, name: tcp, protocol: TCP, targetPort: {one.port}}}]
  endpoints: [{{address: 127.0.0.1}}]
""")
    admin = free_port()
    try:
        with GatewayProcess([str(config)], ports=[9000],
                            extra=["--gateway-class", "mine", "--watch-interval", "0",
                                   "--admin", f"tcp:{admin}:interface=127.0.0.1"]) as gw:
            with socket.create_connection(("127.0.0.1", gw.port(9000)), timeout=5) as s:
                assert recv_until(s, b"\n") == b"one\n"

            def routes() -> dict:
                url = f"http://127.0.0.1:{admin}/config_dump"
                with urllib.request.urlopen(url, timeout=10) as r:
                    status = json.load(r)["config"]["gateway_api"]
                return {r["resource"]: [c["reason"] for c in r["parents"][0]["conditions"]]
                        for r in status["routes"]}

            assert routes() == {"TCPRoute default/first": ["Accepted", "ResolvedRefs"]}
            (config / "second.yaml").write_text("""\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: second}
spec:
  parentRefs: [{name: gw, sectionName: nope}]
  rules: [{backendRefs: [{name: one, port: 1}]}]
""")
            gw.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "TCPRoute default/second" not in routes():
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert routes()["TCPRoute default/second"] == ["NoMatchingParent", "ResolvedRefs"]
            with socket.create_connection(("127.0.0.1", gw.port(9000)), timeout=5) as s:
                assert recv_until(s, b"\n") == b"one\n"
    finally:
        one.close()
