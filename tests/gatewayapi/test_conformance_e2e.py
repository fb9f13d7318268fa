"""
The Gateway API conformance tests for TCPRoute and TLSRoute, end to end: the
verbatim conformance manifests (tests/data/gatewayapi/, see NOTICE) served by
the real gateway process (``twistd tsgate --gateway-class {GATEWAY_CLASS_NAME}``),
real backends on loopback standing in for the suite's echo pods (ServiceEntries
with the Services' hosts point at them), real sockets and real TLS.

Each test names the conformance test (conformance/tests/<name>.go) whose
traffic assertions it makes. A backend answers its name on connect (TCP) or
after the TLS handshake, as the suite's echo-basic pods answer theirs.
"""

from __future__ import annotations

import socket
import ssl
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.gatewayapi.conformance import BASE, CLASS, INFRA, manifest
from tests.support.backends import ThreadedServer
from tests.support.gateway import GatewayProcess, write_service_entries

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "istioinaction"))

import certs  # noqa: E402

WEB = "gateway-conformance-web-backend"
APP = "gateway-conformance-app-backend"


def tcp_identity(name: str):
    def handler(conn: socket.socket) -> None:
        conn.sendall(f"{name}\n".encode())
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            conn.sendall(chunk)

    return handler


def tls_identity(name: str, context: ssl.SSLContext):
    def handler(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as s:
                s.sendall(f"{name}\n".encode())
                while s.recv(65536):
                    pass
        except (ssl.SSLError, OSError):
            pass  # a client that gave up

    return handler


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def tcp_name(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        name = read_line(s).decode().strip()
        s.sendall(b"ping\n")
        assert read_line(s) == b"ping\n"  # the stream is relayed both ways
        return name


def tcp_rejected(port: int) -> None:
    """The gateway accepts and closes: no backend answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            return
        assert data == b""


def tls_name(port: int, sni: str, cafile: str | None = None) -> str:
    if cafile:
        context = ssl.create_default_context(cafile=cafile)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as s:
            return read_line(s).decode().strip()


def tls_rejected(port: int, sni: str) -> None:
    try:
        name = tls_name(port, sni)
    except TimeoutError:
        raise AssertionError(f"SNI {sni}: no answer and no close (timeout)") from None
    except (ssl.SSLError, ConnectionError):
        return
    assert name == "", f"SNI {sni} reached {name!r}"


class Backends:
    """Named backends: TCP identity servers and TLS ones (certificate for abc.example.com)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: dict[str, ThreadedServer] = {}
        self.cert = certs.generate(workdir, "abc.example.com", san=True)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # the leaf and intermediate, so a client trusting the root verifies the chain
        chain = workdir / "chain.pem"
        chain.write_bytes(self.cert.leaf_cert.read_bytes()
                          + self.cert.intermediate_cert.read_bytes())
        self.context.load_cert_chain(chain, self.cert.leaf_key)

    def tcp(self, name: str) -> int:
        server = self.servers[name] = ThreadedServer(tcp_identity(name))
        return server.port

    def tls(self, name: str) -> int:
        server = self.servers[name] = ThreadedServer(tls_identity(name, self.context))
        return server.port

    def close(self) -> None:
        for server in self.servers.values():
            server.close()


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    b = Backends(tmp_path)
    yield b
    b.close()


def service_entries(path: Path, namespace: str, mapping: dict[str, tuple[int, int]]) -> str:
    """ServiceEntries giving Services of ``namespace`` local endpoints."""
    hosts = {f"{svc}.{namespace}.svc.cluster.local": ports for svc, ports in mapping.items()}
    return str(write_service_entries(path, hosts, namespace=namespace))


def gateway(configs: list, ports: list[int], **kwargs) -> GatewayProcess:
    return GatewayProcess([str(BASE), *map(str, configs)], ports=ports,
                          extra=["--gateway-class", CLASS, "--inspect-timeout", "2"], **kwargs)


# ----------------------------------------------------------------- TCPRoute


def test_tcproute_weighted_routing(backends: Backends, tmp_path: Path) -> None:
    """tcproute-weighted-routing.go: 70/30 between v1 and v2, nothing to the weight-0 v3."""
    ses = service_entries(tmp_path / "se.yaml", INFRA, {
        f"tcp-backend-v{i}": (3000, backends.tcp(f"tcp-backend-v{i}")) for i in (1, 2, 3)})
    with gateway([manifest("tcproute-weighted-routing"), ses], [9300]) as gw:
        counts = Counter(tcp_name(gw.port(9300)) for _ in range(400))
    assert counts["tcp-backend-v3"] == 0
    assert set(counts) == {"tcp-backend-v1", "tcp-backend-v2"}
    # weighted random per connection: 400 samples put 0.7 within 0.6-0.8 at 4.4 sigma
    assert 0.6 <= counts["tcp-backend-v1"] / 400 <= 0.8, counts


def test_tcproute_parentref_port_and_section_name(backends: Backends, tmp_path: Path) -> None:
    """tcproute-parentref-port-and-section-name.go: by port, by sectionName, by both."""
    names = ("tcp-echo-one", "tcp-echo-two", "tcp-echo-three")
    ses = service_entries(tmp_path / "se.yaml", INFRA,
                          {n: (3000, backends.tcp(n)) for n in names})
    with gateway([manifest("tcproute-parentref-port-and-section-name"), ses],
                 [9300, 9301, 9302]) as gw:
        assert [tcp_name(gw.port(p)) for p in (9300, 9301, 9302)] == list(names)


def test_tcproute_parentref_attach_all(backends: Backends, tmp_path: Path) -> None:
    """tcproute-parentref-attach-all.go: one route, every TCP listener of the Gateway."""
    ses = service_entries(tmp_path / "se.yaml", INFRA,
                          {"tcp-echo-attach-all": (3000, backends.tcp("tcp-echo-attach-all"))})
    ports = [9310, 9311, 9312, 9313]
    with gateway([manifest("tcproute-parentref-attach-all"), ses], ports) as gw:
        assert {tcp_name(gw.port(p)) for p in ports} == {"tcp-echo-attach-all"}


def test_tcproute_multiple_routes_attachment(backends: Backends, tmp_path: Path) -> None:
    """tcproute-multiple-routes-attachment.go: only the oldest route gets traffic."""
    ses = service_entries(tmp_path / "se.yaml", INFRA, {
        n: (3000, backends.tcp(n)) for n in ("tcp-attach-backend-1", "tcp-attach-backend-2")})
    newer = tmp_path / "newer.yaml"  # the route the .go test creates after the manifest's
    newer.write_text(yaml.safe_dump({
        "apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
        "metadata": {"name": "tcproute-attach-newer", "namespace": INFRA},
        "spec": {"parentRefs": [{"name": "tcp-multi-route-attach-gateway",
                                 "sectionName": "tcp"}],
                 "rules": [{"backendRefs": [{"name": "tcp-attach-backend-2", "port": 3000}]}]}}))
    with gateway([manifest("tcproute-multiple-routes-attachment"), newer, ses], [9310]) as gw:
        assert {tcp_name(gw.port(9310)) for _ in range(30)} == {"tcp-attach-backend-1"}


def test_tcproute_reference_grant(backends: Backends, tmp_path: Path) -> None:
    """tcproute-reference-grant.go: the cross-namespace backend, permitted, is reached."""
    ses = service_entries(tmp_path / "se.yaml", WEB, {
        "tcp-reference-grant-backend": (3000, backends.tcp("tcp-reference-grant-backend"))})
    with gateway([manifest("tcproute-reference-grant"), ses], [9320]) as gw:
        assert tcp_name(gw.port(9320)) == "tcp-reference-grant-backend"


def test_tcproute_invalid_cross_namespace_backend_ref(backends: Backends,
                                                      tmp_path: Path) -> None:
    """tcproute-invalid-cross-namespace-backend-ref.go: no ReferenceGrant, no traffic."""
    ses = service_entries(tmp_path / "se.yaml", WEB, {
        "tcp-invalid-xns-backend": (3000, backends.tcp("tcp-invalid-xns-backend"))})
    with gateway([manifest("tcproute-invalid-cross-namespace-backend-ref"), ses], [9321]) as gw:
        for _ in range(3):
            tcp_rejected(gw.port(9321))


def test_tcproute_invalid_backendref_nonexistent(tmp_path: Path) -> None:
    """tcproute-invalid-backendref-nonexistent.go: the listener rejects connections."""
    with gateway([manifest("tcproute-invalid-backendref-nonexistent")], [9300]) as gw:
        tcp_rejected(gw.port(9300))


# ----------------------------------------------------------------- TLSRoute


def test_tlsroute_simple_same_namespace(backends: Backends, tmp_path: Path) -> None:
    """tlsroute-simple-same-namespace.go: passthrough, the client verifies the backend."""
    ses = service_entries(tmp_path / "se.yaml", INFRA,
                          {"tcp-backend": (8443, backends.tls("tcp-backend"))})
    with gateway([manifest("tlsroute-simple-same-namespace"), ses], [443]) as gw:
        port = gw.port(443)
        assert tls_name(port, "abc.example.com", str(backends.cert.root_cert)) == "tcp-backend"
        tls_rejected(port, "other.example.com")  # in *.example.com, not in the route


def _split_gateways(path: Path, out: Path) -> dict[str, int]:
    """
    tlsroute-hostname-intersection.yaml with each Gateway on its own port: in a
    cluster each Gateway has its own address; one tsgate merges listeners by port.
    """
    docs = list(yaml.safe_load_all(path.read_text()))
    ports = {}
    for doc in docs:
        if doc and doc["kind"] == "Gateway":
            port = 4430 + int(doc["metadata"]["name"].rsplit("-", 1)[1])
            ports[doc["metadata"]["name"]] = port
            for listener in doc["spec"]["listeners"]:
                listener["port"] = port
    out.write_text(f"# {path.name} of kubernetes-sigs/gateway-api, one port per Gateway\n"
                   + yaml.safe_dump_all(docs))
    return ports


def test_tlsroute_hostname_intersection(backends: Backends, tmp_path: Path) -> None:
    """tlsroute-hostname-intersection.go: routes get the intersection of the hostnames."""
    ses = service_entries(tmp_path / "se.yaml", INFRA, {
        "tls-backend": (443, backends.tls("tls-backend")),
        "tls-backend-2": (443, backends.tls("tls-backend-2"))})
    config = tmp_path / "intersection.yaml"
    ports = _split_gateways(manifest("tlsroute-hostname-intersection"), config)
    x = {int(name.rsplit("-", 1)[1]): port for name, port in ports.items()}
    with gateway([config, ses], sorted(ports.values())) as gw:
        # exact listener abc.example.com, route *.example.com
        assert tls_name(gw.port(x[1]), "abc.example.com") == "tls-backend"
        tls_rejected(gw.port(x[1]), "non.matching.com")
        # listener *.example.com; routes abc.example.com and *.com
        assert tls_name(gw.port(x[2]), "abc.example.com") == "tls-backend"
        assert tls_name(gw.port(x[2]), "other.example.com") == "tls-backend-2"
        tls_rejected(gw.port(x[2]), "non.matching.com")
        # listener *.com; routes abc.example.com and *.example.com
        assert tls_name(gw.port(x[3]), "abc.example.com") == "tls-backend"
        assert tls_name(gw.port(x[3]), "other.example.com") == "tls-backend-2"
        tls_rejected(gw.port(x[3]), "non.matching.com")
        # listener without hostname; routes abc.example.com and *.com
        assert tls_name(gw.port(x[4]), "abc.example.com") == "tls-backend"
        assert tls_name(gw.port(x[4]), "other.example.com") == "tls-backend-2"
        tls_rejected(gw.port(x[4]), "non.matching.org")


@pytest.mark.parametrize("name", ["tlsroute-invalid-backendref-nonexistent",
                                  "tlsroute-invalid-backendref-unknown-kind"])
def test_tlsroute_invalid_backends_reject(backends: Backends, tmp_path: Path, name: str) -> None:
    """tlsroute-invalid-backendref-{nonexistent,unknown-kind}.go: the connection is rejected."""
    ses = service_entries(tmp_path / "se.yaml", INFRA,
                          {"tls-backend": (443, backends.tls("tls-backend"))})
    with gateway([manifest(name), ses], [443]) as gw:
        tls_rejected(gw.port(443), "example.com")


def test_tlsroute_invalid_reference_grant(backends: Backends, tmp_path: Path) -> None:
    """tlsroute-invalid-reference-grant.go: seven wrong grants; the backend is not reached."""
    ses = service_entries(tmp_path / "se.yaml", APP,
                          {"tls-backend": (443, backends.tls("tls-backend"))})
    with gateway([manifest("tlsroute-invalid-reference-grant"), ses], [443]) as gw:
        tls_rejected(gw.port(443), "abc.example.com")
