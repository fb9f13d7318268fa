"""
Twisted's own ``twisted.protocols.portforward``, unmodified, as a benchmark peer.

Usage: python bench/portforward_proxy.py BACKEND_PORT
Listens on 127.0.0.1 (any free port), forwards to 127.0.0.1:BACKEND_PORT and
prints ``PORT <n>`` once listening. The default reactor (epoll on Linux).
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.protocols.portforward import ProxyFactory


def main() -> None:
    backend_port = int(sys.argv[1])
    # listenTCP's defaults (backlog 50), as tsgate's "tcp:0" endpoint has
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, ProxyFactory("127.0.0.1", backend_port), interface="127.0.0.1"
    )
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
