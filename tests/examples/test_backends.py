"""The walkthrough's backends, run as real processes and spoken to over real sockets.

- ``echo_server.py`` against go-echo's behaviour: banner first, echo, half-close.
- ``fake_service.py`` against fake-service's JSON, over TLS verified the way the
  book's reader does it (``curl --cacert ca-chain.cert.pem --resolve``) and with
  Python's ``ssl`` checking chain and host name.
- ``walkthrough.py --no-gateway``: one command starts them all, and every
  child is gone after SIGTERM, SIGINT, or even SIGKILL of the walkthrough.

Ports are free ones picked per test, never the book's fixed 2701/9081/9082/31400.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "istioinaction"
sys.path.insert(0, str(EXAMPLES))

import certs  # noqa: E402
import walkthrough  # noqa: E402
from backends import echo_server, fake_service  # noqa: E402

from tests.support.net import free_port  # noqa: E402 (after the examples path)

ECHO = EXAMPLES / "backends" / "echo_server.py"
FAKE = EXAMPLES / "backends" / "fake_service.py"
HOST1 = "simple-sni-1.istioinaction.io"
HOST2 = "simple-sni-2.istioinaction.io"
BANNER_VARS = ("NODE_NAME", "POD_NAME", "POD_NAMESPACE", "POD_IP", "SERVICE_ACCOUNT")
STARTUP_SECONDS = 15.0
IO_TIMEOUT = 10.0




def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the variables the backends read, plus ``extra``."""
    drop = set(BANNER_VARS) | {
        "TCP_PORT",
        "BIND_ADDR",
        "LISTEN_ADDR",
        "NAME",
        "MESSAGE",
        "TLS_CERT_LOCATION",
        "TLS_KEY_LOCATION",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


class Server:
    """A backend process whose output is read on a thread (so its pipe never fills)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = STARTUP_SECONDS) -> re.Match[str]:
        """The first output line (from now) matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r}; last: {self.seen[-20:]!r}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    code, last = self.proc.returncode, self.seen[-20:]
                    raise AssertionError(
                        f"exited {code} before {pattern!r}; last: {last!r}"
                    ) from None
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=IO_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=IO_TIMEOUT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


def start_echo(*args: str, **env: str) -> tuple[Server, int]:
    server = Server([sys.executable, str(ECHO), *args], clean_env(TCP_PORT="0", **env))
    port = int(server.wait_for(r"Listening on TCP port (\d+)").group(1))
    return server, port


def recv_until_eof(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


# ---------------------------------------------------------------- echo server

BOOK_ENV = {
    "NODE_NAME": "minikube",
    "POD_NAME": "tcp-echo-deployment-6c4c8c9b5c-x2tmz",
    "POD_NAMESPACE": "istioinaction",
    "POD_IP": "172.17.0.7",
    "SERVICE_ACCOUNT": "default",
}
BOOK_BANNER = (
    b"Welcome, you are connected to node minikube.\n"
    b"Running on Pod tcp-echo-deployment-6c4c8c9b5c-x2tmz.\n"
    b"In namespace istioinaction.\n"
    b"With IP address 172.17.0.7.\n"
    b"Service default.\n"
)


def test_banner_from_env_only_present_variables() -> None:
    """Lines appear in go-echo's order, only for variables that are set and non-empty."""
    assert echo_server.banner_from_env(BOOK_ENV) == BOOK_BANNER
    assert echo_server.banner_from_env({"SERVICE_ACCOUNT": "sa", "NODE_NAME": "n"}) == (
        b"Welcome, you are connected to node n.\nService sa.\n"
    )
    assert echo_server.banner_from_env({"POD_IP": ""}) == b""
    assert echo_server.banner_from_env({}) == b""


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[Server, int]]:
    # --quiet-data: the half-close test sends a megabyte, not worth logging byte by byte
    server, port = start_echo("--quiet-data", **BOOK_ENV)
    yield server, port
    server.stop()


def test_echo_banner_arrives_before_client_sends(echo: tuple[Server, int]) -> None:
    """Server-first: the whole banner comes on connect, without the client saying anything."""
    _, port = echo
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        assert recv_exactly(sock, len(BOOK_BANNER)) == BOOK_BANNER


def test_echo_echoes_hello_sam(echo: tuple[Server, int]) -> None:
    """The book's session: after the banner, ``hello Sam`` comes back as typed."""
    _, port = echo
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        recv_exactly(sock, len(BOOK_BANNER))
        sock.sendall(b"hello Sam\r\n")
        assert recv_exactly(sock, 11) == b"hello Sam\r\n"
        sock.sendall(b"again\n")
        assert recv_exactly(sock, 6) == b"again\n"


def test_echo_half_close_returns_everything_then_closes(echo: tuple[Server, int]) -> None:
    """Client shuts its write side: all sent bytes still come back, then the server closes."""
    _, port = echo
    payload = os.urandom(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(recv_until_eof(sock)))
        reader.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        reader.join(timeout=30)
        assert not reader.is_alive(), "server did not close after the client's half-close"
    assert received[0] == BOOK_BANNER + payload


def test_echo_logs_like_go_echo() -> None:
    """go-echo's log lines: open, raw bytes, string, closed -- with one connection id."""
    server, port = start_echo(NODE_NAME="n")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
            recv_exactly(sock, len(b"Welcome, you are connected to node n.\n"))
            sock.sendall(b"hi\n")
            recv_exactly(sock, 3)
        stamp = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d"
        opened = server.wait_for(rf"^{stamp} ([0-9a-f-]{{36}}) - TCP connection open\.$")
        conn = opened.group(1)
        server.wait_for(rf"^{stamp} {conn} - Received Raw Data: \[104 105 10\]$")
        server.wait_for(rf"^{stamp} {conn} - Received Data \(converted to string\): hi$")
        server.wait_for(rf"^{stamp} {conn} - TCP connection closed\.$")
    finally:
        server.stop()


def test_echo_without_banner_variables_just_echoes() -> None:
    """No downward-API variables: no banner, the first bytes back are the client's own."""
    server, port = start_echo()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(b"ping\n")
            assert recv_exactly(sock, 5) == b"ping\n"
    finally:
        server.stop()


def test_echo_exits_nonzero_when_port_is_taken(echo: tuple[Server, int]) -> None:
    """A second server on a busy port says so and exits 1 instead of hanging."""
    _, port = echo
    result = subprocess.run(
        [sys.executable, str(ECHO)],
        env=clean_env(TCP_PORT=str(port)),
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr


# --------------------------------------------------------------- fake service


def test_go_duration_matches_go() -> None:
    """Go's time.Duration.String for the ranges fake-service's durations fall in."""
    cases = {
        0: "0s",
        1: "1ns",
        999: "999ns",
        1100: "1.1µs",
        5_941_000: "5.941ms",
        2_000_000: "2ms",
        1_000_000_000: "1s",
        2_200_000_000: "2.2s",
        60_000_000_000: "1m0s",
        90_500_000_000: "1m30.5s",
        3_600_000_000_000: "1h0m0s",
        -1500: "-1.5µs",
    }
    assert {ns: fake_service.go_duration(ns) for ns in cases} == cases


def test_go_json_is_indented_and_html_escaped() -> None:
    """Two-space indent, ``<>&`` escaped as Go does, UTF-8 kept, trailing newline."""
    assert (
        fake_service.go_json({"a": "<&>", "b": ["é"], "code": 200})
        == (
            '{\n  "a": "\\u003c\\u0026\\u003e",\n  "b": [\n    "é"\n  ],\n  "code": 200\n}\n'
        ).encode()
    )


def test_parse_listen_addr() -> None:
    """Go's host:port forms, including IPv6 brackets and an empty host."""
    assert fake_service.parse_listen_addr("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert fake_service.parse_listen_addr("127.0.0.1:9081") == ("127.0.0.1", 9081)
    assert fake_service.parse_listen_addr("[::1]:9081") == ("::1", 9081)
    assert fake_service.parse_listen_addr(":8080") == ("0.0.0.0", 8080)
    with pytest.raises(ValueError):
        fake_service.parse_listen_addr("8080")


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, certs.CertPaths]:
    base = tmp_path_factory.mktemp("sni")
    return {host: certs.generate(base, host) for host in (HOST1, HOST2)}


def start_fake(env: dict[str, str]) -> tuple[Server, int]:
    server = Server([sys.executable, str(FAKE)], clean_env(LISTEN_ADDR="127.0.0.1:0", **env))
    port = int(server.wait_for(r"listenAddress=127\.0\.0\.1:(\d+)").group(1))
    return server, port


@pytest.fixture(scope="module")
def tls_service(chains: dict[str, certs.CertPaths]) -> Iterator[tuple[Server, int]]:
    paths = chains[HOST1]
    server, port = start_fake(
        {
            "TLS_CERT_LOCATION": str(paths.leaf_cert),
            "TLS_KEY_LOCATION": str(paths.leaf_key),
            "NAME": "simple-tls-service-1",
            "MESSAGE": "Hello from simple-tls-service-1!!!",
        }
    )
    yield server, port
    server.stop()


def https_get(port: int, path: str, cafile: Path, host: str) -> tuple[int, str]:
    """GET over TLS, verifying the chain against ``cafile`` and the name ``host``."""
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=IO_TIMEOUT, context=context)
    # Connect to 127.0.0.1 but send SNI and check the certificate for ``host``,
    # as curl --resolve does.
    conn.host = host
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    conn.sock = context.wrap_socket(sock, server_hostname=host)
    try:
        conn.request("GET", path, headers={"Host": f"{host}:{port}"})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        conn.close()


GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+(\.\d+)?(ns|µs|ms|s)$")


def check_answer(text: str, name: str, uri: str, body: str) -> None:
    """fake-service v0.14.1's JSON: field order, formats, omitempty."""
    assert text.startswith('{\n  "name": ') and text.endswith("\n}\n")
    answer = json.loads(text)
    keys = ["name", "uri", "type", "ip_addresses", "start_time", "end_time", "duration"]
    keys += ["body", "code"]
    if "ip_addresses" not in answer:  # omitted when the host has no non-loopback IPv4
        keys.remove("ip_addresses")
    assert list(answer) == keys
    assert answer["name"] == name
    assert answer["uri"] == uri
    assert answer["type"] == "HTTP"
    assert answer["body"] == body
    assert answer["code"] == 200
    for ip in answer.get("ip_addresses", []):
        address = ipaddress.ip_address(ip)
        assert address.version == 4 and not address.is_loopback
    assert GO_TIME.match(answer["start_time"]) and GO_TIME.match(answer["end_time"])
    assert answer["start_time"] <= answer["end_time"]
    assert GO_DURATION.match(answer["duration"]), answer["duration"]


def test_tls_service_answers_python_ssl(
    tls_service: tuple[Server, int], chains: dict[str, certs.CertPaths]
) -> None:
    """Python's ssl verifies the chain with ca-chain.cert.pem and the host name; JSON is right."""
    _, port = tls_service
    status, text = https_get(port, "/", chains[HOST1].ca_chain, HOST1)
    assert status == 200
    check_answer(text, "simple-tls-service-1", "/", "Hello from simple-tls-service-1!!!")
    status, text = https_get(port, "/some/path?x=1", chains[HOST1].ca_chain, HOST1)
    check_answer(
        text, "simple-tls-service-1", "/some/path?x=1", "Hello from simple-tls-service-1!!!"
    )


def test_tls_service_answers_curl_like_the_book(
    tls_service: tuple[Server, int], chains: dict[str, certs.CertPaths]
) -> None:
    """The book's curl command, pointed straight at the backend's port."""
    _, port = tls_service
    result = subprocess.run(
        [
            "curl",
            "-sS",
            f"https://{HOST1}:{port}/",
            "--cacert",
            str(chains[HOST1].ca_chain),
            "--resolve",
            f"{HOST1}:{port}:127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=IO_TIMEOUT * 2,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    check_answer(result.stdout, "simple-tls-service-1", "/", "Hello from simple-tls-service-1!!!")


def test_tls_service_health(
    tls_service: tuple[Server, int], chains: dict[str, certs.CertPaths]
) -> None:
    """``/health`` answers ``OK`` as fake-service does."""
    _, port = tls_service
    assert https_get(port, "/health", chains[HOST1].ca_chain, HOST1) == (200, "OK")


def test_tls_service_is_refused_for_another_name_or_ca(
    tls_service: tuple[Server, int], chains: dict[str, certs.CertPaths]
) -> None:
    """Verification is real: the other host's name, or the other host's CA, fails."""
    _, port = tls_service
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(port, "/", chains[HOST1].ca_chain, HOST2)
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(port, "/", chains[HOST2].ca_chain, HOST1)


def test_tls_service_sends_the_leaf_only(
    tls_service: tuple[Server, int], chains: dict[str, certs.CertPaths]
) -> None:
    """Like the Kubernetes secret in the book, only the leaf goes on the wire."""
    _, port = tls_service
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            HOST1,
            "-showcerts",
            "-CAfile",
            str(chains[HOST1].ca_chain),
            "-verify_return_error",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=IO_TIMEOUT * 2,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("-----BEGIN CERTIFICATE-----") == 1
    assert "Verify return code: 0 (ok)" in result.stdout
    leaf_pem = chains[HOST1].leaf_cert.read_text().strip()
    assert leaf_pem in result.stdout


def test_leaf_context_factory_in_process(chains: dict[str, certs.CertPaths]) -> None:
    """Usable in-process where warnings are errors (no deprecated pyOpenSSL X509 objects),
    and a key that does not belong to the certificate is refused at once."""
    from OpenSSL import SSL

    good = fake_service.LeafContextFactory(
        str(chains[HOST1].leaf_cert), str(chains[HOST1].leaf_key)
    )
    assert isinstance(good.getContext(), SSL.Context)
    with pytest.raises(SSL.Error):
        fake_service.LeafContextFactory(str(chains[HOST1].leaf_cert), str(chains[HOST2].leaf_key))


def test_plain_http_without_tls_variables() -> None:
    """Without TLS_CERT_LOCATION/TLS_KEY_LOCATION it serves plain HTTP; a JSON MESSAGE is raw."""
    server, port = start_fake({"NAME": "plain", "MESSAGE": '{"hello": [1, 2]}'})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
        conn.request("GET", "/")
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
        assert json.loads(text)["body"] == {"hello": [1, 2]}
        assert '"body": {\n    "hello": [\n      1,' in text
    finally:
        server.stop()


# ---------------------------------------------------------------- walkthrough


def process_gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (it no longer holds sockets)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if not process_gone(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if not process_gone(pid)]


class Walkthrough:
    """``walkthrough.py`` on free ports, with the children's pids it reports.

    ``gateway=False`` runs it with ``--no-gateway``; with the gateway, its
    admin, readiness and metrics endpoints are turned off so tests can run side by side.
    """

    def __init__(self, workdir: Path, gateway: bool = False) -> None:
        self.workdir = workdir
        self.echo_port, self.port1, self.port2 = free_port(), free_port(), free_port()
        self.gateway_port = free_port()
        if gateway:
            mode = [
                "--port",
                str(self.gateway_port),
                "--gateway-arg=--admin=none",
                "--gateway-arg=--readiness=none",
                "--gateway-arg=--metrics=none",
            ]
        else:
            mode = ["--no-gateway"]
        self.server = Server(
            [
                sys.executable,
                str(EXAMPLES / "walkthrough.py"),
                *mode,
                "--workdir",
                str(workdir),
                "--echo-port",
                str(self.echo_port),
                "--service-ports",
                str(self.port1),
                str(self.port2),
            ],
            clean_env(),
        )
        self.pids = [
            int(self.server.wait_for(rf"^{name}: pid (\d+), listening").group(1))
            for name in ("tcp-echo-service", "simple-tls-service-1", "simple-tls-service-2")
        ]
        if gateway:
            self.pids.append(int(self.server.wait_for(r"^gateway: pid (\d+), listening").group(1)))
        self.commands: list[str] = []
        while True:
            line = self.server.wait_for(r"^.*$").group(0)
            if line.startswith("Press Ctrl-C to stop."):
                break
            if line.startswith(("telnet ", "curl ")):
                self.commands.append(line.strip())

    def cleanup(self) -> None:
        """Whatever the test did, leave no process behind."""
        self.server.stop()
        for pid in self.pids:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walkthrough]:
    w = Walkthrough(tmp_path / "run")
    try:
        yield w
    finally:
        w.cleanup()


def test_walkthrough_backends_answer_then_sigterm_stops_all(walk: Walkthrough) -> None:
    """One command: certs written, echo banner as in the book, both TLS services answer;
    SIGTERM ends the walkthrough with status 0 and no child left running."""
    with socket.create_connection(("127.0.0.1", walk.echo_port), timeout=IO_TIMEOUT) as sock:
        banner = recv_exactly(sock, len(b"Welcome, you are connected to node minikube.\n"))
        assert banner == b"Welcome, you are connected to node minikube.\n"
        rest = b""
        while not rest.endswith(b"Service default.\n"):
            chunk = sock.recv(4096)
            assert chunk
            rest += chunk
        assert b"In namespace istioinaction.\n" in rest
        sock.sendall(b"hello Sam\n")
        assert recv_exactly(sock, 10) == b"hello Sam\n"
    for n, (host, port) in enumerate(((HOST1, walk.port1), (HOST2, walk.port2)), start=1):
        chain = certs.layout(walk.workdir, host).ca_chain
        status, text = https_get(port, "/", chain, host)
        assert status == 200
        check_answer(text, f"simple-tls-service-{n}", "/", f"Hello from simple-tls-service-{n}!!!")
    assert all(not process_gone(pid) for pid in walk.pids)

    walk.server.proc.send_signal(signal.SIGTERM)
    assert walk.server.proc.wait(timeout=IO_TIMEOUT) == 0
    assert wait_gone(walk.pids, 1.0) == []
    for port in (walk.echo_port, walk.port1, walk.port2):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT).close()


def test_walkthrough_sigint_stops_all(walk: Walkthrough) -> None:
    """Ctrl-C (SIGINT to the walkthrough alone) stops every child too."""
    walk.server.proc.send_signal(signal.SIGINT)
    assert walk.server.proc.wait(timeout=IO_TIMEOUT) == 0
    assert wait_gone(walk.pids, 1.0) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_walkthrough_killed_leaves_no_orphans(walk: Walkthrough) -> None:
    """Even SIGKILL of the walkthrough takes the backends down (parent-death signal)."""
    walk.server.proc.kill()
    walk.server.proc.wait(timeout=IO_TIMEOUT)
    assert wait_gone(walk.pids, IO_TIMEOUT) == []


def test_walkthrough_stops_when_a_backend_dies(walk: Walkthrough) -> None:
    """A backend that exits takes the walkthrough (and the other backends) down with it."""
    os.kill(walk.pids[1], signal.SIGKILL)
    walk.server.wait_for(r"simple-tls-service-1 exited")
    assert walk.server.proc.wait(timeout=IO_TIMEOUT) != 0
    assert wait_gone(walk.pids, 1.0) == []


def test_book_commands_use_local_paths(tmp_path: Path) -> None:
    """The printed commands are the book's, with this workdir's ca-chain and 127.0.0.1."""
    text = walkthrough.book_commands(tmp_path, 31400)
    lines = text.splitlines()
    assert lines[0].startswith("telnet localhost 31400")
    for line, host in zip(lines[1:], (HOST1, HOST2)):
        chain = tmp_path / host.split(".")[0] / "2_intermediate" / "certs" / "ca-chain.cert.pem"
        assert line == (
            f"curl https://{host}:31400/ --cacert {chain} --resolve {host}:31400:127.0.0.1"
        )


def test_rewrite_configs_moves_ports(tmp_path: Path) -> None:
    """With other ports, the book's YAML is copied with the gateway and backend ports moved."""
    import yaml

    sources = [EXAMPLES / name for name in walkthrough.CONFIG_FILES]
    port_map = {2701: 12701, 9081: 19081, 9082: 19082}
    written = walkthrough.rewrite_configs(sources, tmp_path, port_map, 41400)
    docs = [d for path in written for d in yaml.safe_load_all(path.read_text()) if d]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for server in by_name[("Gateway", "echo-tcp-gateway")]["spec"]["servers"]:
        assert server["port"]["number"] == 41400
    for server in by_name[("Gateway", "sni-passthrough-gateway")]["spec"]["servers"]:
        assert server["port"]["number"] == 41400
    assert by_name[("VirtualService", "tcp-echo-vs-from-gw")]["spec"]["tcp"][0]["match"] == [
        {"port": 41400}
    ]
    for n in (1, 2):
        vs = by_name[("VirtualService", f"simple-sni-{n}-vs")]["spec"]["tls"][0]
        assert vs["match"][0]["port"] == 41400
        # the destination still names the service port the ServiceEntry declares
        assert vs["route"][0]["destination"]["port"]["number"] == 80
    ports: dict[str, Optional[int]] = {}
    for name in ("tcp-echo-service", "simple-tls-service-1", "simple-tls-service-2"):
        spec = by_name[("ServiceEntry", name)]["spec"]
        endpoint_ports = [p for e in spec.get("endpoints", []) for p in e.get("ports", {}).values()]
        ports[name] = endpoint_ports[0] if endpoint_ports else spec["ports"][0].get("targetPort")
    assert ports == {
        "tcp-echo-service": 12701,
        "simple-tls-service-1": 19081,
        "simple-tls-service-2": 19082,
    }


def test_walkthrough_refuses_busy_ports(tmp_path: Path) -> None:
    """A port already taken (say, by a walkthrough still running) is named, nothing starts."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "walkthrough.py"),
                "--no-gateway",
                "--workdir",
                str(tmp_path),
                "--echo-port",
                str(busy),
                "--service-ports",
                str(free_port()),
                str(free_port()),
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=STARTUP_SECONDS,
            check=False,
        )
    assert result.returncode == 1
    assert f"port(s) {busy} on 127.0.0.1 already in use" in result.stdout


@pytest.mark.e2e
def test_walkthrough_with_gateway_runs_the_books_commands(tmp_path: Path) -> None:
    """The README's one command, whole: the printed telnet and curl commands work as the
    book says -- banner and echo through the gateway port, each SNI to its own service."""
    walk = Walkthrough(tmp_path / "run", gateway=True)
    try:
        port = walk.gateway_port
        telnet, curl1, curl2 = walk.commands
        assert telnet.startswith(f"telnet localhost {port}")
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
            # telnet sends nothing first: after the 1 s inspection timeout the
            # gateway takes the TCP route and go-echo's banner arrives.
            expected = (
                b"Welcome, you are connected to node minikube.\n"
                b"Running on Pod tcp-echo-deployment-local.\n"
                b"In namespace istioinaction.\n"
                b"With IP address 127.0.0.1.\n"
                b"Service default.\n"
            )
            assert recv_exactly(sock, len(expected)) == expected
            sock.sendall(b"hello Sam\r\n")
            assert recv_exactly(sock, 11) == b"hello Sam\r\n"
        for n, command in enumerate((curl1, curl2), start=1):
            result = subprocess.run(
                ["curl", "-sS", *command.split()[1:]],
                capture_output=True,
                text=True,
                timeout=IO_TIMEOUT * 2,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            check_answer(
                result.stdout,
                f"simple-tls-service-{n}",
                "/",
                f"Hello from simple-tls-service-{n}!!!",
            )
        walk.server.proc.send_signal(signal.SIGTERM)
        assert walk.server.proc.wait(timeout=IO_TIMEOUT * 2) == 0
        assert wait_gone(walk.pids, 1.0) == []
    finally:
        walk.cleanup()
