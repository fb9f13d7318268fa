"""
AuthorizationPolicy and per-source limits on a real ``twistd -n tsgate``:
clients bound to different 127.0.0.x source addresses, a server-first
backend that counts the connections it accepted (a denied client must have
caused none and received no byte), SNI rules on a TLS passthrough port with
real TLS, a bounded flood from one address while another keeps working,
a reload that changes policies for new connections only, and remoteIpBlocks
behind a real HAProxy sending PROXY v2.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Optional

import pytest
import yaml

from tests.e2e.conftest import certs
from tests.support.backends import ThreadedServer
from tests.support.gateway import GatewayProcess, free_port, wait_for_port

BANNER = b"WELCOME server-first\n"
TCP_PORT = 7600
TLS_PORT = 7643


class CountingBanner:
    """A server-first backend: counts accepts, sends a banner at once, then echoes."""

    def __init__(self) -> None:
        self.accepted = 0
        self.lock = threading.Lock()
        self.server = ThreadedServer(self.handle)
        self.port = self.server.port

    def handle(self, conn: socket.socket) -> None:
        with self.lock:
            self.accepted += 1
        conn.sendall(BANNER)
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


class CountingTls:
    """A TLS backend for passthrough: counts accepts, answers one line after the handshake."""

    def __init__(self, workdir: Path, host: str) -> None:
        paths = certs.generate(workdir, host)
        self.ca = paths.ca_chain
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(paths.leaf_cert), str(paths.leaf_key))
        self.accepted = 0
        self.lock = threading.Lock()
        self.server = ThreadedServer(self.handle)
        self.port = self.server.port

    def handle(self, conn: socket.socket) -> None:
        with self.lock:
            self.accepted += 1
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello over tls\n")
                tls.recv(100)
        except (ssl.SSLError, OSError):
            pass


def config(tmp_path: Path, banner: CountingBanner, tls: Optional[CountingTls],
           policies: list[dict], annotations: Optional[dict[str, str]] = None,
           name: str = "config.yaml") -> Path:
    servers = [{"port": {"number": TCP_PORT, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}]
    docs: list[dict] = [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default",
                      "annotations": annotations or {}},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "banner", "namespace": "default"},
         "spec": {"hosts": ["*"], "gateways": ["gw"], "tcp": [
             {"match": [{"port": TCP_PORT}],
              "route": [{"destination": {"host": "banner.local", "port": {"number": 1}}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "banner", "namespace": "default"},
         "spec": {"hosts": ["banner.local"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                  "ports": [{"number": 1, "name": "tcp", "protocol": "TCP",
                             "targetPort": banner.port}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
    ]
    if tls is not None:
        servers.append({"port": {"number": TLS_PORT, "name": "tls", "protocol": "TLS"},
                        "hosts": ["*.authz.test"], "tls": {"mode": "PASSTHROUGH"}})
        docs += [
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "tls", "namespace": "default"},
             "spec": {"hosts": ["*.authz.test"], "gateways": ["gw"], "tls": [
                 {"match": [{"port": TLS_PORT, "sniHosts": ["*.authz.test"]}],
                  "route": [{"destination": {"host": "tls.local", "port": {"number": 1}}}]}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
             "metadata": {"name": "tls", "namespace": "default"},
             "spec": {"hosts": ["tls.local"], "location": "MESH_INTERNAL",
                      "resolution": "STATIC",
                      "ports": [{"number": 1, "name": "tls", "protocol": "TLS",
                                 "targetPort": tls.port}],
                      "endpoints": [{"address": "127.0.0.1"}]}},
        ]
    for p in policies:
        docs.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", **p})
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return path


def ap(name: str, spec: dict, ns: str = "istio-system",
       annotations: Optional[dict[str, str]] = None) -> dict:
    meta: dict = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec}


def connect(port: int, source: str) -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything until the gateway closes (or resets) the connection."""
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, f"closed after {out!r}"
        out += chunk
    return out


def wait_log(gw: GatewayProcess, text: str, count: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while gw.text().count(text) < count:
        assert time.monotonic() < deadline, f"waited for {count}x {text!r}:\n{gw.text()}"
        time.sleep(0.05)


def stats(admin: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?format=json", timeout=10) as r:
        data = json.loads(r.read())
    return {s["name"]: s["value"] for s in data["stats"] if "value" in s}


@pytest.fixture
def banner() -> CountingBanner:
    b = CountingBanner()
    yield b
    b.server.close()


def start(tmp_path: Path, path: Path, ports: list[int], admin: Optional[int] = None,
          extra: tuple[str, ...] = ()) -> GatewayProcess:
    args = list(extra)
    if admin is not None:
        args += ["--admin", f"tcp:{admin}:interface=127.0.0.1"]
    return GatewayProcess([str(path)], ports=ports, access_log=tmp_path / "access.log",
                          extra=args)


def test_denied_clients_get_no_upstream_and_no_byte(tmp_path: Path,
                                                    banner: CountingBanner) -> None:
    path = config(tmp_path, banner, None, [
        ap("deny-66", {"action": "DENY",
                       "rules": [{"from": [{"source": {"ipBlocks": ["127.0.0.66/32"]}}]}]}),
        ap("allow-lan", {"action": "ALLOW",
                         "rules": [{"from": [{"source": {"ipBlocks": ["127.0.0.0/28",
                                                                      "127.0.0.66"]}}]}]},
           ns="default"),
    ])
    admin = free_port()
    with start(tmp_path, path, [TCP_PORT], admin) as gw:
        wait_for_port(admin)
        port = gw.port(TCP_PORT)
        denied = connect(port, "127.0.0.66")
        outside = connect(port, "127.0.0.77")
        for s in (denied, outside):
            assert read_all(s) == b""  # closed without a byte from any backend
        line = gw.wait_access_line_from(denied.getsockname())
        assert "rbac_access_denied_matched_policy[ns[istio-system]-policy[deny-66]-rule[0]]" \
            in line
        # upstream host, cluster and upstream local address are all "-"
        assert ' "-" - - 127.0.0.1:' in line
        line = gw.wait_access_line_from(outside.getsockname())
        assert "rbac_access_denied_matched_policy[none]" in line
        denied.close()
        outside.close()
        # an allowed client gets the banner at once and an echo
        ok = connect(port, "127.0.0.3")
        assert recv_exact(ok, len(BANNER)) == BANNER
        ok.sendall(b"ping\n")
        assert recv_exact(ok, 5) == b"ping\n"
        ok_address = ok.getsockname()
        ok.close()
        gw.wait_access_line_from(ok_address)
        assert banner.accepted == 1  # the denied clients caused no upstream connection
        counters = stats(admin)
        assert counters["tcp.rbac.denied"] == 2
        assert counters["tcp.rbac.allowed"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/authz", timeout=10) as r:
            view = json.loads(r.read())
        sources = {d["source"]: d for d in view["denied"]}
        assert sources["127.0.0.66"]["policy"] == \
            "ns[istio-system]-policy[deny-66]-rule[0]"
        assert sources["127.0.0.77"]["policy"] == "none"


@pytest.fixture
def tls_backend(tmp_path: Path) -> CountingTls:
    t = CountingTls(tmp_path / "certs", "good.authz.test")
    yield t
    t.server.close()


def tls_connect(port: int, source: str, sni: str, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with connect(port, source) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            return tls.recv(100)


def test_sni_rules_on_a_passthrough_port(tmp_path: Path, banner: CountingBanner,
                                         tls_backend: CountingTls) -> None:
    path = config(tmp_path, banner, tls_backend, [
        ap("sni-deny", {"action": "DENY", "rules": [
            {"when": [{"key": "connection.sni", "values": ["bad.authz.test"]}]},
            {"from": [{"source": {"ipBlocks": ["127.0.0.70"]}}],
             "to": [{"operation": {"ports": [str(TLS_PORT)]}}]},
        ]}),
    ])
    with start(tmp_path, path, [TCP_PORT, TLS_PORT]) as gw:
        port = gw.port(TLS_PORT)
        # the SNI rule: denied right after the ClientHello, no upstream connection
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            tls_connect(port, "127.0.0.2", "bad.authz.test", tls_backend.ca)
        # the IP rule on the TLS port: closed at accept, before any ClientHello
        early = connect(port, "127.0.0.70")
        assert read_all(early) == b""
        line = gw.wait_access_line_from(early.getsockname())
        assert "rbac_access_denied_matched_policy[ns[istio-system]-policy[sni-deny]-rule[1]]" \
            in line
        early.close()
        assert tls_backend.accepted == 0
        # an allowed name completes the backend's own TLS handshake (passthrough)
        assert tls_connect(port, "127.0.0.2", "good.authz.test", tls_backend.ca) == \
            b"hello over tls\n"
        assert tls_backend.accepted == 1
        lines = gw.wait_access_lines(3)
        assert any("bad.authz.test" in li and "policy[sni-deny]-rule[0]" in li for li in lines)
        # port 7600 is not covered by rule 1 (it names the TLS port only)
        plain = connect(gw.port(TCP_PORT), "127.0.0.70")
        assert recv_exact(plain, len(BANNER)) == BANNER
        plain.close()


def test_per_ip_limits_under_a_flood_while_another_address_works(
        tmp_path: Path, banner: CountingBanner) -> None:
    path = config(tmp_path, banner, None, [], annotations={
        "tsgate.io/max-connections-per-ip": "3",
        "tsgate.io/max-connections": "20",
    })
    admin = free_port()
    with start(tmp_path, path, [TCP_PORT], admin) as gw:
        wait_for_port(admin)
        port = gw.port(TCP_PORT)
        flood = [connect(port, "127.0.0.7") for _ in range(12)]  # bounded flood
        served = refused = 0
        for s in flood:
            data = s.recv(len(BANNER))
            if data == BANNER:
                served += 1
            else:
                assert data == b""
                refused += 1
        assert (served, refused) == (3, 9)
        # another address is unaffected while the flood holds its three
        other = connect(port, "127.0.0.8")
        assert recv_exact(other, len(BANNER)) == BANNER
        assert banner.accepted == 4
        line = gw.wait_access_line_from(flood[-1].getsockname())
        assert "tsgate_limit_exceeded[max-connections-per-ip]" in line
        assert "limit tsgate.io/max-connections-per-ip: refused 127.0.0.7 on listener" in gw.text()
        # closing one frees a slot for the flooding address
        for s in flood:
            s.close()
        deadline = time.monotonic() + 10
        while True:
            again = connect(port, "127.0.0.7")
            if again.recv(len(BANNER)) == BANNER:
                break
            again.close()
            assert time.monotonic() < deadline, "the per-IP count was never released"
            time.sleep(0.05)
        again.close()
        other.close()
        counters = stats(admin)
        assert counters['tcp.limit_refused{reason="max-connections-per-ip"}'] >= 9
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/authz", timeout=10) as r:
            view = json.loads(r.read())
        assert view["limited"][0]["source"] == "127.0.0.7"
        assert view["limited"][0]["reason"] == "max-connections-per-ip"


def test_rate_per_ip_and_inspection_cap(tmp_path: Path, banner: CountingBanner,
                                        tls_backend: CountingTls) -> None:
    path = config(tmp_path, banner, tls_backend, [], annotations={
        "tsgate.io/connection-rate-per-ip": "4/m",
        "tsgate.io/max-inspecting-connections": "2",
    })
    with start(tmp_path, path, [TCP_PORT, TLS_PORT], extra=("--inspect-timeout", "30")) as gw:
        port = gw.port(TCP_PORT)
        results = []
        for _ in range(6):
            s = connect(port, "127.0.0.9")
            results.append(s.recv(len(BANNER)))
            s.close()
        assert results == [BANNER] * 4 + [b""] * 2  # burst of 4, then one every 15 s
        s = connect(port, "127.0.0.10")
        assert recv_exact(s, len(BANNER)) == BANNER
        s.close()
        # two silent clients hold the TLS port's inspection slots (rate: other addresses)
        tls_port = gw.port(TLS_PORT)
        silent = [connect(tls_port, f"127.0.0.{20 + i}") for i in range(2)]
        third = connect(tls_port, "127.0.0.30")
        assert read_all(third) == b""
        line = gw.wait_access_line_from(third.getsockname())
        assert "tsgate_limit_exceeded[max-inspecting-connections]" in line
        third.close()
        for s in silent:
            s.close()
        deadline = time.monotonic() + 10
        while True:  # their close gives the slots back
            try:
                reply = tls_connect(tls_port, "127.0.0.31", "good.authz.test", tls_backend.ca)
                break
            except (ssl.SSLError, OSError):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert reply == b"hello over tls\n"


def test_reload_changes_policies_for_new_connections_only(tmp_path: Path,
                                                          banner: CountingBanner) -> None:
    def policies(address: str) -> list[dict]:
        return [ap("deny-one", {"action": "DENY",
                                "rules": [{"from": [{"source": {"ipBlocks": [address]}}]}]})]

    path = config(tmp_path, banner, None, policies("127.0.0.40"))
    with GatewayProcess([str(path)], ports=[TCP_PORT], access_log=tmp_path / "access.log",
                        extra=["--watch-interval", "0"]) as gw:
        port = gw.port(TCP_PORT)
        kept = connect(port, "127.0.0.41")
        assert recv_exact(kept, len(BANNER)) == BANNER
        denied = connect(port, "127.0.0.40")
        assert read_all(denied) == b""
        denied.close()
        config(tmp_path, banner, None, policies("127.0.0.41"))
        gw.signal(signal.SIGHUP)
        wait_log(gw, "configuration reloaded")
        # the established connection from .41 carries on
        kept.sendall(b"still here\n")
        assert recv_exact(kept, 11) == b"still here\n"
        # new connections get the new policy
        new41 = connect(port, "127.0.0.41")
        assert read_all(new41) == b""
        new41.close()
        new40 = connect(port, "127.0.0.40")
        assert recv_exact(new40, len(BANNER)) == BANNER
        new40.close()
        kept.close()
        assert banner.accepted == 2


def test_dry_run_logs_and_counts_but_denies_nothing(tmp_path: Path,
                                                   banner: CountingBanner) -> None:
    path = config(tmp_path, banner, None, [
        ap("would-deny", {"action": "DENY",
                          "rules": [{"from": [{"source": {"ipBlocks": ["127.0.0.50"]}}]}]},
           annotations={"istio.io/dry-run": "true"}),
    ])
    admin = free_port()
    with start(tmp_path, path, [TCP_PORT], admin) as gw:
        wait_for_port(admin)
        port = gw.port(TCP_PORT)
        for source in ("127.0.0.50", "127.0.0.51"):
            s = connect(port, source)
            assert recv_exact(s, len(BANNER)) == BANNER
            s.close()
        wait_log(gw, "rbac dry-run: would deny 127.0.0.50")
        counters = stats(admin)
        assert counters["tcp.rbac.shadow_denied"] == 1
        assert counters["tcp.rbac.shadow_allowed"] == 1
        assert "tcp.rbac.denied" not in counters
        assert banner.accepted == 2


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (.ci/run installs it)")
def test_remote_ip_blocks_behind_a_real_haproxy_sending_proxy_v2(
        tmp_path: Path, banner: CountingBanner) -> None:
    path = config(tmp_path, banner, None, [
        ap("via-lb", {"action": "ALLOW", "rules": [
            {"from": [{"source": {"ipBlocks": ["127.0.0.1"],
                                  "remoteIpBlocks": ["127.0.0.60/32"]}}]}]}),
    ], annotations={"tsgate.io/proxy-protocol": "required",
                    "tsgate.io/proxy-protocol-trusted-cidrs": "127.0.0.1/32",
                    "tsgate.io/max-connections-per-ip": "1"})
    with start(tmp_path, path, [TCP_PORT]) as gw:
        front = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(f"""\
global
    log stdout format raw local0
defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{front}
    default_backend be
backend be
    server gw 127.0.0.1:{gw.port(TCP_PORT)} send-proxy-v2
""")
        with (tmp_path / "haproxy.log").open("w") as out:
            lb = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=out,
                                  stderr=subprocess.STDOUT)
        try:
            wait_for_port(front)
            # the allowed client: a server-first banner through HAProxy, then an echo
            ok = connect(front, "127.0.0.60")
            assert recv_exact(ok, len(BANNER)) == BANNER
            ok.sendall(b"ping\n")
            assert recv_exact(ok, 5) == b"ping\n"
            # the same client again: its per-IP limit is its own address, not HAProxy's
            twice = connect(front, "127.0.0.60")
            assert read_all(twice) == b""
            # another client through the same HAProxy: denied, no upstream, no byte
            other = connect(front, "127.0.0.61")
            assert read_all(other) == b""
            line = gw.wait_access_line_from(other.getsockname())
            assert "rbac_access_denied_matched_policy[none]" in line
            line = gw.wait_access_line_from(twice.getsockname())
            assert "tsgate_limit_exceeded[max-connections-per-ip]" in line
            for s in (ok, twice, other):
                s.close()
            assert banner.accepted == 1
        finally:
            lb.terminate()
            lb.wait(10)
