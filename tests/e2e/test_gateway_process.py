"""
The gateway process as users start it: twistd and the .tac file, startup
errors, upstream failures, host-name resolution, JSON access logs, tcp6.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import ROOT, TCP_FILES, Backends
from tests.support.backends import ThreadedServer, echo
from tests.support.gateway import GatewayProcess, free_port, twistd


def route_config(path: Path, port: int, host: str, dest_port: int,
                 service_entry_port: int | None = None) -> Path:
    docs: list[dict] = [
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
         "metadata": {"name": "gw"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": port, "name": "tcp", "protocol": "TCP"},
                               "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
         "metadata": {"name": "vs"},
         "spec": {"hosts": ["*"], "gateways": ["gw"],
                  "tcp": [{"route": [{"destination": {"host": host,
                                                      "port": {"number": dest_port}}}]}]}},
    ]
    if service_entry_port is not None:
        docs.append({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "ServiceEntry",
            "metadata": {"name": "se"},
            "spec": {"hosts": [host], "resolution": "STATIC", "location": "MESH_INTERNAL",
                     "ports": [{"number": dest_port, "name": "tcp", "protocol": "TCP",
                                "targetPort": service_entry_port}],
                     "endpoints": [{"address": "127.0.0.1"}]}})
    path.write_text(yaml.safe_dump_all(docs))
    return path


def run_twistd(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([twistd(), "--nodaemon", "--pidfile=", "tsgate", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_invalid_config_exits_non_zero_naming_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata:\n  name: g\n"
        "spec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n"
        "      number: 70000\n      name: tcp\n      protocol: TCPP\n    hosts: ['*']\n"
    )
    out = run_twistd(["--config", str(bad), "--admin", "none", "--readiness", "none"])
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert f"{bad}:" in text
    assert "Gateway default/g" in text
    assert "spec.servers[0].port.number" in text
    assert "spec.servers[0].port.protocol" in text
    assert "tsgate listening" not in text


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = route_config(tmp_path / "c.yaml", port, "localhost", 1)
        out = run_twistd(["--config", str(config), "--bind", "127.0.0.1",
                          "--admin", "none", "--readiness", "none"])
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert f"cannot listen for 0.0.0.0_{port}" in text
    assert "Address already in use" in text or "in use" in text


def test_tac_file_runs_the_same_service(backends: Backends, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ,
           "TSGATE_CONFIG": os.pathsep.join(TCP_FILES + [str(backends.service_entries)]),
           "TSGATE_ARGS": f"--endpoint 31400=tcp:{port}:interface=127.0.0.1 "
                          "--admin none --readiness none --metrics none"}
    process = subprocess.Popen([twistd(), "-ny", str(ROOT / "tac" / "tsgate.tac"), "--pidfile="],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "tac gateway did not listen"
                time.sleep(0.1)
        with s:
            assert s.recv(100).startswith(b"Welcome")
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    assert process.returncode == 0, out


def test_connect_failure_closes_client_promptly_with_uf(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    config = route_config(tmp_path / "c.yaml", 7100, "dead-backend", 9000,
                          service_entry_port=dead)
    with GatewayProcess([str(config)], ports=[7100]) as gw:
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", gw.port(7100)), timeout=5) as s:
            assert s.recv(10) == b""
        assert time.monotonic() - start < 3
        line = gw.wait_access_lines(1)[-1]
        assert " UF " in line
        assert f'"127.0.0.1:{dead}"' in line


def test_destination_without_service_entry_resolves_the_host_name(tmp_path: Path) -> None:
    """No ServiceEntry: the destination host is resolved by DNS as written (here localhost)."""
    server = ThreadedServer(echo)
    try:
        config = route_config(tmp_path / "c.yaml", 7200, "localhost", server.port)
        with GatewayProcess([str(config)], ports=[7200]) as gw:
            with socket.create_connection(("127.0.0.1", gw.port(7200)), timeout=10) as s:
                s.sendall(b"ping\n")
                assert s.recv(10) == b"ping\n"
            out = subprocess.run([sys.executable, "-m", "tsgate", "routes", str(config)],
                                 capture_output=True, text=True, timeout=30)
            assert "localhost" in out.stdout
    finally:
        server.close()


def test_json_access_log_to_a_file(tmp_path: Path) -> None:
    server = ThreadedServer(echo)
    log = tmp_path / "access.json"
    try:
        config = route_config(tmp_path / "c.yaml", 7300, "echo-svc", 9000,
                              service_entry_port=server.port)
        with GatewayProcess([str(config)], ports=[7300], access_log=log,
                            extra=["--access-log-format", "json"]) as gw:
            with socket.create_connection(("127.0.0.1", gw.port(7300)), timeout=10) as s:
                s.sendall(b"12345")
                assert s.recv(10) == b"12345"
            record = json.loads(gw.wait_access_lines(1)[0])
        assert record["bytes_received"] == 5 and record["bytes_sent"] == 5
        assert record["upstream_cluster"] == "outbound|9000||echo-svc.default.svc.cluster.local"
        assert record["response_flags"] is None and record["response_code"] == 0
        assert record["route_name"] == "tcp->default/vs#tcp[0]"
    finally:
        server.close()


def test_tcp6_endpoint_on_ipv6_loopback(tmp_path: Path) -> None:
    server = ThreadedServer(echo)
    try:
        port = free_port()
        config = route_config(tmp_path / "c.yaml", port, "echo-svc", 9000,
                              service_entry_port=server.port)
        with GatewayProcess([str(config)], ports=[], extra=["--bind", "::1"]) as gw:
            deadline = time.monotonic() + 10
            while "tsgate listening" not in gw.text():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with socket.create_connection(("::1", port), timeout=10) as s:
                s.sendall(b"v6")
                assert s.recv(10) == b"v6"
            assert "[::1]:" in gw.wait_access_lines(1)[0]
    finally:
        server.close()


def test_systemd_endpoint_without_a_socket_is_a_clear_error(tmp_path: Path) -> None:
    config = route_config(tmp_path / "c.yaml", 7800, "x", 1)
    out = run_twistd(["--config", str(config), "--endpoint", "7800=systemd:domain=INET:index=0",
                      "--admin", "none", "--readiness", "none"])
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "cannot listen for 0.0.0.0_7800 on systemd:domain=INET:index=0" in text


@pytest.mark.parametrize("option", ["--inspect-timeout=abc", "--gateway-label=novalue"])
def test_bad_options_are_usage_errors(option: str, tmp_path: Path) -> None:
    config = route_config(tmp_path / "c.yaml", 7400, "x", 1)
    out = run_twistd(["--config", str(config), option])
    assert out.returncode != 0
    assert option.split("=")[0].lstrip("-") in out.stdout + out.stderr


def test_systemd_socket_activation_endpoint(tmp_path: Path) -> None:
    """
    `--endpoint PORT=systemd:domain=INET:index=0` serves a socket handed over
    the way systemd does it (fd 3, LISTEN_FDS, LISTEN_PID).
    """
    server = ThreadedServer(echo)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    port = listening.getsockname()[1]
    try:
        config = route_config(tmp_path / "c.yaml", 7700, "echo-svc", 9000,
                              service_entry_port=server.port)
        fd = listening.fileno()
        # As systemd does: the socket as fd 3, LISTEN_FDS=1, LISTEN_PID = the server's pid
        # (the shell's own pid, which exec hands to twistd). bash: dash takes one-digit fds only.
        move = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
        script = (f'{move}export LISTEN_FDS=1 LISTEN_FDNAMES=tsgate LISTEN_PID=$$; '
                  f'exec {twistd()} '
                  f'--nodaemon --pidfile= tsgate --config {config} '
                  '--endpoint 7700=systemd:domain=INET:index=0 --admin none --readiness none '
                  '--metrics none')
        process = subprocess.Popen(["bash", "-c", script], pass_fds=(fd,),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            listening.close()  # only the gateway holds the socket now
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"activated")
                assert s.recv(20) == b"activated"
        finally:
            process.terminate()
            out, _ = process.communicate(timeout=20)
        assert b"tsgate listening: 0.0.0.0_7700" in out, out
        assert process.returncode == 0, out
    finally:
        server.close()
