"""
The book's chapter 4 walkthrough against the real gateway process, with the
seed's YAML verbatim and real clients (sockets, nc, curl, Python ssl).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from tests.e2e.conftest import HOSTS, SNI_BOTH_FILES, TCP_FILES, Backends
from tests.support.gateway import GatewayProcess
from tests.support.streams import recv_until

BANNER_FIRST_LINE = b"Welcome, you are connected to node minikube.\n"


def tls_client(port: int, server_hostname: str | None, cafile: str | None = None,
               timeout: float = 10.0) -> ssl.SSLSocket:
    if cafile:
        context = ssl.create_default_context(cafile=cafile)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname=server_hostname)


def https_get(sock: ssl.SSLSocket, host: str) -> dict:
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


@pytest.fixture(scope="module")
def tcp_gateway(backends: Backends):
    with GatewayProcess(TCP_FILES + [str(backends.service_entries)], ports=[31400]) as gw:
        yield gw


@pytest.fixture(scope="module")
def sni_gateway(backends: Backends):
    with GatewayProcess(SNI_BOTH_FILES + [str(backends.service_entries)], ports=[31400],
                        extra=["--inspect-timeout", "2"]) as gw:
        yield gw


class TestTcpEcho:
    def test_banner_arrives_before_the_client_speaks(self, tcp_gateway: GatewayProcess) -> None:
        """Server-first: the go-echo banner reaches a silent client (a TCP port never inspects)."""
        # 3 s is far below the 15 s inspection timeout: an inspecting port would fail this.
        with socket.create_connection(("127.0.0.1", tcp_gateway.port(31400)), timeout=3) as s:
            banner = recv_until(s, b"Service default.\n")
            assert banner.startswith(BANNER_FIRST_LINE)
            assert b"In namespace istioinaction.\n" in banner
            s.sendall(b"hello Sam\r\n")
            assert recv_until(s, b"\n") == b"hello Sam\r\n"

    def test_nc_sees_banner_and_echo(self, tcp_gateway: GatewayProcess) -> None:
        out = subprocess.run(
            ["nc", "-N", "127.0.0.1", str(tcp_gateway.port(31400))],
            input=b"hello Sam\n", capture_output=True, timeout=20,
        )
        assert out.stdout.startswith(BANNER_FIRST_LINE)
        assert out.stdout.endswith(b"hello Sam\n")

    def test_access_log_line_is_istio_format(self, tcp_gateway: GatewayProcess) -> None:
        with socket.create_connection(("127.0.0.1", tcp_gateway.port(31400)), timeout=5) as s:
            client = s.getsockname()
            recv_until(s, b"Service default.\n")
            s.sendall(b"abc\n")
            recv_until(s, b"abc\n")
        line = tcp_gateway.wait_access_line_from(client)
        fields = line.split()
        assert fields[1:4] == ['"-', "-", '-"'] and fields[4] == "0"
        assert fields[9] == "4"  # bytes received from the client
        assert "outbound|2701||tcp-echo-service.default.svc.cluster.local" in line
        assert fields[23] == "tcp->default/tcp-echo-vs-from-gw#tcp[0]"


class TestSniPassthrough:
    @pytest.mark.parametrize("index", [0, 1])
    def test_curl_reaches_the_right_service(self, sni_gateway: GatewayProcess,
                                            backends: Backends, index: int) -> None:
        host, port = HOSTS[index], sni_gateway.port(31400)
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "10", f"https://{host}:{port}/",
             "--cacert", str(backends.certs[index].ca_chain),
             "--resolve", f"{host}:{port}:127.0.0.1"],
            capture_output=True, timeout=30,
        )
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        assert answer["name"] == f"simple-tls-service-{index + 1}"
        assert answer["body"] == f"Hello from simple-tls-service-{index + 1}!!!"
        assert answer["code"] == 200

    @pytest.mark.parametrize("index", [0, 1])
    def test_python_ssl_sees_the_backend_certificate(self, sni_gateway: GatewayProcess,
                                                      backends: Backends, index: int) -> None:
        host = HOSTS[index]
        with tls_client(sni_gateway.port(31400), host,
                        cafile=str(backends.certs[index].ca_chain)) as s:
            seen = s.getpeercert(binary_form=True)
            leaf = ssl.PEM_cert_to_DER_cert(backends.certs[index].leaf_cert.read_text())
            assert seen == leaf
            assert https_get(s, host)["name"] == f"simple-tls-service-{index + 1}"
        trace = f" {host} tls:{host}->default/simple-sni-{index + 1}-vs#tls[0]"
        deadline = time.monotonic() + 10
        while not any(trace in line for line in sni_gateway.access_lines()):
            assert time.monotonic() < deadline, sni_gateway.access_lines()
            time.sleep(0.05)

    def _assert_closed_without_service(self, port: int, hostname: str | None) -> None:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with tls_client(port, hostname, timeout=5) as s:
                s.recv(1)

    def test_unknown_sni_no_sni_and_plaintext_are_closed(self, sni_gateway: GatewayProcess,
                                                          backends: Backends) -> None:
        """Bad connections are closed, and a concurrent good connection carries on."""
        port = sni_gateway.port(31400)
        good = tls_client(port, HOSTS[0], cafile=str(backends.certs[0].ca_chain))
        try:
            before = len(sni_gateway.access_lines())
            self._assert_closed_without_service(port, "unknown.istioinaction.io")
            self._assert_closed_without_service(port, None)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert s.recv(100) == b""
            lines = sni_gateway.wait_access_lines(before + 3)
            assert all(" NR filter_chain_not_found " in line for line in lines[before:])
            assert all(line.split()[23] == "none" for line in lines[before:]), lines
            assert "unknown.istioinaction.io" in "".join(lines[before:])
            assert https_get(good, HOSTS[0])["name"] == "simple-tls-service-1"
        finally:
            good.close()

    def test_curl_without_sni_fails(self, sni_gateway: GatewayProcess) -> None:
        port = sni_gateway.port(31400)
        out = subprocess.run(["curl", "-sk", "--max-time", "10", f"https://127.0.0.1:{port}/"],
                             capture_output=True, timeout=30)
        assert out.returncode != 0


@pytest.mark.parametrize("order", ["tcp-first", "tls-first"])
def test_tcp_and_tls_on_one_port_in_either_order(backends: Backends, order: str) -> None:
    """Istio drops the TLS server in the TCP-first order (istio#27481); tsgate serves both."""
    files = TCP_FILES + SNI_BOTH_FILES if order == "tcp-first" else SNI_BOTH_FILES + TCP_FILES
    with GatewayProcess(files + [str(backends.service_entries)], ports=[31400],
                        extra=["--inspect-timeout", "1"]) as gw:
        port = gw.port(31400)
        with tls_client(port, HOSTS[1], cafile=str(backends.certs[1].ca_chain)) as s:
            assert https_get(s, HOSTS[1])["name"] == "simple-tls-service-2"
        # A silent server-first client gets the banner once inspection times out.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert recv_until(s, b"Service default.\n").startswith(BANNER_FIRST_LINE)
            s.sendall(b"hello Sam\n")
            assert recv_until(s, b"\n") == b"hello Sam\n"
        # A plaintext client that speaks first goes to the TCP route at once.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"hello Sam\n")
            data = recv_until(s, b"hello Sam\n")
            assert data.startswith(BANNER_FIRST_LINE) and data.endswith(b"hello Sam\n")


def test_nc_is_installed() -> None:
    """The e2e tests drive real clients; CI must install them (.ci/run)."""
    for tool in ("nc", "curl", "openssl"):
        assert shutil.which(tool), tool


def test_many_threads_share_the_gateway(tcp_gateway: GatewayProcess) -> None:
    """Forty concurrent echo sessions each get their own bytes back."""
    errors: list[str] = []

    def session(n: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", tcp_gateway.port(31400)), timeout=10) as s:
                recv_until(s, b"Service default.\n")
                payload = f"client {n}\n".encode()
                s.sendall(payload)
                got = recv_until(s, b"\n")
                if got != payload:
                    errors.append(f"{n}: {got!r}")
        except OSError as exc:
            errors.append(f"{n}: {exc}")

    threads = [threading.Thread(target=session, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
