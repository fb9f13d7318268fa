"""A TCP echo server that behaves like ``cjimti/go-echo``, the book's ``tcp-echo-service``.

go-echo is *server-first*: on connect it writes a banner built from the
environment variables Kubernetes' downward API gives the pod, then echoes
every byte back until the client closes. That first write is what makes the
walkthrough interesting for a gateway -- ``telnet localhost 31400`` only shows
the banner if the gateway connects upstream on accept, before the client has
sent anything.

Banner lines, each only when its variable is set and non-empty, each ending
in a newline (go-echo HEAD)::

    Welcome, you are connected to node <NODE_NAME>.
    Running on Pod <POD_NAME>.
    In namespace <POD_NAMESPACE>.
    With IP address <POD_IP>.
    Service <SERVICE_ACCOUNT>.

Half-close: when the client shuts down its write side, the server writes back
whatever it has already been sent and then closes, as go-echo does (its read
loop ends at EOF and the deferred ``Close`` follows the last ``Write``).

Log lines go to stderr in Go's ``log`` format, as go-echo writes them::

    2026/11/25 20:41:07 Listening on TCP port 2701
    2026/11/25 20:41:09 <uuid> - TCP connection open.
    2026/11/25 20:41:12 <uuid> - Received Raw Data: [104 105 10]
    2026/11/25 20:41:12 <uuid> - Received Data (converted to string): hi
    2026/11/25 20:41:15 <uuid> - TCP connection closed.

Differences from go-echo: it binds 127.0.0.1 by default (go-echo binds every
interface; use ``--bind``/``BIND_ADDR`` for that), the default port is the
book's 2701 (go-echo's is 1025), and ``--quiet-data`` turns off the two
per-read data lines (go-echo always logs them, which costs a lot for bulk
transfers). The port actually bound is logged, so ``TCP_PORT=0`` works for
tests.

Run: ``TCP_PORT=2701 NODE_NAME=minikube python examples/istioinaction/backends/echo_server.py``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

DEFAULT_PORT = 2701
DEFAULT_BIND = "127.0.0.1"

# (environment variable, line template) in go-echo's order.
_BANNER_LINES = (
    ("NODE_NAME", "Welcome, you are connected to node {}.\n"),
    ("POD_NAME", "Running on Pod {}.\n"),
    ("POD_NAMESPACE", "In namespace {}.\n"),
    ("POD_IP", "With IP address {}.\n"),
    ("SERVICE_ACCOUNT", "Service {}.\n"),
)


def banner_from_env(env: Mapping[str, str]) -> bytes:
    """The banner go-echo writes on connect, from the variables present in ``env``."""
    return "".join(
        template.format(env[name]) for name, template in _BANNER_LINES if env.get(name)
    ).encode("utf-8")


def go_log(message: str) -> None:
    """One line in Go's default ``log`` format (local date and time, stderr).

    Like Go's ``log``, a newline is added only when the message lacks one.
    """
    end = "" if message.endswith("\n") else "\n"
    sys.stderr.write(f"{time.strftime('%Y/%m/%d %H:%M:%S')} {message}{end}")
    sys.stderr.flush()


@implementer(IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """Banner on connect, then every received byte written back, until EOF."""

    def __init__(self, banner: bytes, log_data: bool) -> None:
        self.banner = banner
        self.log_data = log_data
        self.client_id = str(uuid.uuid4())

    def connectionMade(self) -> None:
        go_log(f"{self.client_id} - TCP connection open.")
        assert self.transport is not None
        if self.banner:
            self.transport.write(self.banner)

    def dataReceived(self, data: bytes) -> None:
        if self.log_data:
            go_log(f"{self.client_id} - Received Raw Data: [{' '.join(map(str, data))}]")
            text = data.decode("utf-8", "replace")
            go_log(f"{self.client_id} - Received Data (converted to string): {text}")
        assert self.transport is not None
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        # The client will send no more: everything it sent has been echoed
        # into the transport's buffer; loseConnection flushes it, then closes.
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        # The client no longer reads; nothing more to do for it.
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        go_log(f"{self.client_id} - TCP connection closed.")


class EchoFactory(Factory):
    """Makes :class:`EchoProtocol` with one banner for all connections, as go-echo does."""

    def __init__(self, banner: bytes, log_data: bool = True) -> None:
        self.banner = banner
        self.log_data = log_data

    def buildProtocol(self, addr: object) -> EchoProtocol:
        return EchoProtocol(self.banner, self.log_data)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Listen and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="go-echo compatible TCP echo server")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("TCP_PORT") or DEFAULT_PORT),
        help=f"port (default: $TCP_PORT or {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--bind",
        default=os.environ.get("BIND_ADDR") or DEFAULT_BIND,
        help=f"address to bind (default: $BIND_ADDR or {DEFAULT_BIND})",
    )
    parser.add_argument(
        "--quiet-data", action="store_true", help="do not log the bytes of every read"
    )
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    factory = EchoFactory(banner_from_env(os.environ), log_data=not args.quiet_data)
    return serve(reactor, tcp_endpoint(reactor, args.bind, args.port), factory)


def tcp_endpoint(reactor: Any, host: str, port: int) -> IStreamServerEndpoint:
    """A TCP server endpoint on ``host`` (IPv4 or IPv6 literal)."""
    if ":" in host:
        return TCP6ServerEndpoint(reactor, port, interface=host)
    return TCP4ServerEndpoint(reactor, port, interface=host)


def serve(reactor: Any, endpoint: IStreamServerEndpoint, factory: Factory) -> int:
    """Listen, log the bound port as go-echo does, run the reactor; 1 if listening fails."""
    status = [0]

    def listening(port: Any) -> None:
        go_log(f"Listening on TCP port {port.getHost().port}")

    def failed(failure: Failure) -> None:
        go_log(f"cannot listen: {failure.getErrorMessage()}")
        status[0] = 1
        reactor.callWhenRunning(reactor.stop)

    endpoint.listen(factory).addCallbacks(listening, failed)
    reactor.run()
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
