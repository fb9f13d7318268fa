"""Small socket helpers shared by the lean transport, port and connector."""

from __future__ import annotations

import socket
from typing import Any, Optional

from twisted.internet.address import IPv4Address, IPv6Address


def twisted_address(sockaddr: Any, family: int) -> Any:
    """A Twisted address object for a socket address (built only when asked)."""
    if family == socket.AF_INET6:
        return IPv6Address("TCP", sockaddr[0], sockaddr[1])
    return IPv4Address("TCP", sockaddr[0], sockaddr[1])


def close_quietly(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
