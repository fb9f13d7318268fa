"""An HTTP(S) server that answers like ``nicholasjackson/fake-service:v0.14.1``.

The book's ``simple-tls-service-1`` and ``-2`` are fake-service containers that
terminate TLS themselves with a certificate for ``simple-sni-N.istioinaction.io``;
the gateway only passes the TLS bytes through by SNI. This server reads the same
environment variables:

``LISTEN_ADDR``        ``host:port`` to listen on (default ``0.0.0.0:8080`` like
                       fake-service; ``[::1]:8080`` for IPv6; port 0 picks a free one)
``TLS_CERT_LOCATION``  PEM certificate; with ``TLS_KEY_LOCATION`` turns TLS on
``TLS_KEY_LOCATION``   PEM private key
``NAME``               the ``name`` field of every answer
``MESSAGE``            the ``body`` field (raw JSON when it starts with ``{``)

TLS presents exactly the certificate in ``TLS_CERT_LOCATION`` -- in the book
the leaf alone, as in the Kubernetes secret -- and the client completes the
chain from its own ``--cacert ca-chain.cert.pem`` (intermediate + root), as with
Go's ``ListenAndServeTLS``. A certificate file holding a chain sends the chain.

Every path except ``/health`` and ``/ready`` (which answer ``OK``) gets
fake-service's JSON, pretty-printed with two spaces as Go's encoder writes it,
empty fields left out except ``code``::

    {
      "name": "simple-tls-service-1",
      "uri": "/",
      "type": "HTTP",
      "ip_addresses": [
        "172.17.0.5"
      ],
      "start_time": "2026-11-25T20:41:07.123456",
      "end_time": "2026-11-25T20:41:07.123789",
      "duration": "333.1µs",
      "body": "Hello from simple-tls-service-1!!!",
      "code": 200
    }

``ip_addresses`` are the host's non-loopback IPv4 interface addresses, as
fake-service lists them; times are local, in Go's ``2006-01-02T15:04:05.000000``
layout; ``duration`` is a Go ``time.Duration`` string.

Not imitated: upstream calls (``UPSTREAM_URIS``), error injection, timing
variance, gRPC, the UI, and HTTP/2 (Go negotiates ``h2`` by ALPN; this server
speaks HTTP/1.1, which curl falls back to -- the JSON is the same).

Run: ``LISTEN_ADDR=127.0.0.1:9081 NAME=simple-tls-service-1 MESSAGE=hi python fake_service.py``
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Mapping
from typing import Any, Optional

from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

DEFAULT_LISTEN_ADDR = "0.0.0.0:8080"
# fake-service's timeFormat: Go's reference time in the layout it uses.
_GO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def parse_listen_addr(value: str) -> tuple[str, int]:
    """Split Go's ``host:port`` (``[v6]:port``, ``:port`` = all interfaces)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"LISTEN_ADDR must be host:port, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


def go_duration(ns: int) -> str:
    """Format nanoseconds as Go's ``time.Duration.String`` does (``5.941ms``, ``1m2.5s``)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1000:
        text = f"{u}ns"
    elif u < 1_000_000:
        text = _go_frac(u, 1000) + "µs"
    elif u < 1_000_000_000:
        text = _go_frac(u, 1_000_000) + "ms"
    else:
        minutes, rest = divmod(u, 60_000_000_000)
        text = _go_frac(rest, 1_000_000_000) + "s"
        if minutes:
            hours, minutes = divmod(minutes, 60)
            text = f"{minutes}m{text}"
            if hours:
                text = f"{hours}h{text}"
    return sign + text


def _go_frac(value: int, unit: int) -> str:
    """``value/unit`` in decimal with the fraction's trailing zeros dropped, as Go's fmtFrac."""
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def go_json(obj: Any) -> bytes:
    """JSON as Go's ``json.Encoder`` with ``SetIndent("", "  ")`` writes it.

    Go escapes ``<``, ``>``, ``&``, U+2028 and U+2029 (HTML safety), keeps other
    non-ASCII as UTF-8, and ends the document with a newline.
    """
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return (text + "\n").encode("utf-8")


def _body_value(message: str) -> Any:
    """The ``body`` field: MESSAGE as a string, or as JSON when it starts with ``{``."""
    if message.startswith("{"):
        try:
            return json.loads(message)
        except ValueError:
            pass  # fake-service would emit invalid JSON here; a string is kinder
    return message


_ip_cache: Optional[list[str]] = None


def ip_addresses() -> list[str]:
    """Non-loopback, non-multicast IPv4 interface addresses (cached, like fake-service)."""
    global _ip_cache
    if _ip_cache is None:
        found = []
        for addr in _interface_ipv4_addresses():
            ip = ipaddress.ip_address(addr)
            if not ip.is_loopback and not ip.is_multicast and addr not in found:
                found.append(addr)
        _ip_cache = found
    return _ip_cache


def _interface_ipv4_addresses() -> list[str]:
    try:
        import fcntl
    except ImportError:  # not Unix: the addresses the host name resolves to
        try:
            return socket.gethostbyname_ex(socket.gethostname())[2]
        except OSError:
            return []
    siocgifaddr = 0x8915  # Linux: an interface's primary IPv4 address
    result = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                request = struct.pack("256s", name.encode()[:15])
                packed = fcntl.ioctl(s.fileno(), siocgifaddr, request)
            except OSError:
                continue  # interface without an IPv4 address
            result.append(socket.inet_ntoa(packed[20:24]))
    return result


def hclog(message: str) -> None:
    """A log line shaped like fake-service's (hclog) on stdout."""
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
    sys.stdout.write(f"{stamp} [INFO]  {message}\n")
    sys.stdout.flush()


class FakeServiceResource(Resource):
    """Answers every request like fake-service's HTTP handler (a leaf resource)."""

    isLeaf = True

    def __init__(self, name: str, message: str) -> None:
        super().__init__()
        self.name = name
        self.message = message

    def render(self, request: Request) -> bytes:
        # Go's net/http sends no Server header; keep the answer's headers alike.
        request.responseHeaders.removeHeader(b"server")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if request.path in (b"/health", b"/ready"):
            return b"OK"
        start = datetime.datetime.now()
        started_ns = time.perf_counter_ns()
        uri = request.uri.decode("utf-8", "replace")
        hclog(
            f'Handling request: request="{request.method.decode()} {uri} '
            f'{request.clientproto.decode()}"'
        )
        answer = {
            "name": self.name,
            "uri": uri,
            "type": "HTTP",
            "ip_addresses": ip_addresses(),
            "start_time": "",
            "end_time": "",
            "duration": "",
            "body": _body_value(self.message),
            "code": 200,
        }
        elapsed_ns = time.perf_counter_ns() - started_ns
        answer["start_time"] = start.strftime(_GO_TIME_FORMAT)
        answer["end_time"] = (start + datetime.timedelta(microseconds=elapsed_ns // 1000)).strftime(
            _GO_TIME_FORMAT
        )
        answer["duration"] = go_duration(elapsed_ns)
        # omitempty: every field but code disappears when empty.
        return go_json({k: v for k, v in answer.items() if k == "code" or v not in ("", [], None)})


@implementer(IOpenSSLContextFactory)
class LeafContextFactory:
    """Server TLS context presenting the certificate file's certificates, leaf first.

    Only what the file holds is sent (the leaf alone in the book); a file with a
    chain sends the chain, as Go's ``tls.LoadX509KeyPair`` does. TLS 1.2 and
    1.3, like Go's server defaults.

    An old-style context factory (``getContext``) built from ``cryptography``
    objects: Twisted's ``CertificateOptions`` hands pyOpenSSL ``X509`` objects
    to ``Context.use_certificate``, which pyOpenSSL >= 24.3 deprecates -- an
    error wherever warnings are errors, as in this project's tests.
    """

    def __init__(self, cert_path: str, key_path: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        with open(cert_path, "rb") as f:
            self.certs = x509.load_pem_x509_certificates(f.read())
        with open(key_path, "rb") as f:
            self.key = load_pem_private_key(f.read(), password=None)
        self._context: Any = None
        self._context = self._make_context()  # fail now, not on the first client

    def _make_context(self) -> Any:
        from OpenSSL import SSL

        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.use_certificate(self.certs[0])
        for extra in self.certs[1:]:
            ctx.add_extra_chain_cert(extra)
        ctx.use_privatekey(self.key)  # type: ignore[arg-type]
        ctx.check_privatekey()
        return ctx

    def getContext(self) -> Any:
        return self._context


def main(env: Optional[Mapping[str, str]] = None) -> int:
    """Listen per the environment and serve until SIGINT/SIGTERM; 1 if that fails."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import (
        SSL4ServerEndpoint,
        TCP4ServerEndpoint,
        TCP6ServerEndpoint,
    )
    from twisted.web.server import Site

    env = os.environ if env is None else env
    host, port = parse_listen_addr(env.get("LISTEN_ADDR") or DEFAULT_LISTEN_ADDR)
    name = env.get("NAME", "Service")
    cert, key = env.get("TLS_CERT_LOCATION"), env.get("TLS_KEY_LOCATION")
    site = Site(FakeServiceResource(name, env.get("MESSAGE", "Hello World")))
    site.displayTracebacks = False
    endpoint: Any
    try:
        if cert and key:
            # SSL4ServerEndpoint takes IPv6 literals too (it calls listenSSL).
            endpoint = SSL4ServerEndpoint(
                reactor, port, LeafContextFactory(cert, key), interface=host
            )
        elif ":" in host:
            endpoint = TCP6ServerEndpoint(reactor, port, interface=host)
        else:
            endpoint = TCP4ServerEndpoint(reactor, port, interface=host)
    except Exception as e:  # unreadable or unparsable certificate/key, key mismatch
        hclog(f"Error starting service: error={e}")
        return 1
    status = [0]

    def listening(listening_port: Any) -> None:
        bound = listening_port.getHost()
        shown = f"[{bound.host}]" if ":" in bound.host else bound.host
        hclog(
            f"Starting service: name={name} upstreamURIs= upstreamWorkers=1 "
            f"listenAddress={shown}:{bound.port} service type=http tls={bool(cert and key)}"
        )

    def failed(failure: Any) -> None:
        error = failure.getErrorMessage()
        hclog(f"Error starting service: listenAddress={host}:{port} error={error}")
        status[0] = 1
        reactor.callWhenRunning(reactor.stop)  # type: ignore[attr-defined]

    endpoint.listen(site).addCallbacks(listening, failed)
    reactor.run()  # type: ignore[attr-defined]
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
