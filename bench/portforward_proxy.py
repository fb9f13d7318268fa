"""
Twisted's own ``twisted.protocols.portforward``, unmodified, as a benchmark peer.

Usage: python bench/portforward_proxy.py BACKEND_PORT
Listens on 127.0.0.1 (any free port), forwards to 127.0.0.1:BACKEND_PORT and
prints ``PORT <n>`` once listening. The default reactor (epoll on Linux).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.protocols.portforward import ProxyFactory

reactor: Any = _reactor


def main() -> None:
    backend_port = int(sys.argv[1])
    # backlog 1024 like tsgate's listeners (Twisted's default of 50 drops SYNs
    # under bursts); the protocol code is Twisted's, unmodified.
    factory = ProxyFactory("127.0.0.1", backend_port)
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
