"""Loopback helpers shared by the tests that open real sockets."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Blackhole:
    """
    A loopback address where a TCP connect hangs (stays in SYN-SENT): a
    listener with a full accept queue that never accepts. Linux drops a SYN
    to a listener whose accept queue is full, so the client retransmits and
    waits, as for an unrouted address, without any packet leaving loopback.

        with Blackhole() as (host, port): ...
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = socket.socket()
        self.listener.bind((host, 0))
        self.listener.listen(0)
        self.address: tuple[str, int] = (host, int(self.listener.getsockname()[1]))
        self.fillers: list[socket.socket] = []
        # fill the accept queue: connects complete until it is full
        for _ in range(16):
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(self.address)
            except (socket.timeout, OSError):
                filler.close()
                return
            self.fillers.append(filler)
        raise RuntimeError("the accept queue did not fill up")

    def __enter__(self) -> tuple[str, int]:
        return self.address

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()
