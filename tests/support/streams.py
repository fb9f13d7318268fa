"""
Client-side helpers for end-to-end tests: reading up to a marker, and a
bounded set of connections that keep streaming random bytes through the
gateway and checking the echo (reload and restart tests: nothing may be cut).
"""

from __future__ import annotations

import random
import socket
import threading
import time


def recv_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> bytes:
    """Bytes read until ``marker`` is in them, the peer closes, or ``limit`` is reached."""
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class EchoStreams:
    """
    ``count`` connections to ``port``, each first expecting the backend's tag
    line (``first``), then sending random payloads (1-4096 bytes) and checking
    each echo, until :meth:`stop`. ``failures`` names every connection that was
    cut, got other bytes, or another tag; ``moved`` counts the bytes each echoed.
    """

    def __init__(self, port: int, count: int, first: bytes) -> None:
        self.port = port
        self.first = first
        self.failures: list[str] = []
        self.moved = [0] * count
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._stream, args=(n,)) for n in range(count)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for t in self._threads:
            if t.ident is not None:  # started
                t.join(timeout)

    def _stream(self, n: int) -> None:
        rng = random.Random(n)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=20) as s:
                tag = recv_until(s, b"\n")
                if tag != self.first + b"\n":
                    self.failures.append(f"{n}: first tag {tag!r}")
                    return
                while not self._stop.is_set():
                    payload = rng.randbytes(rng.randint(1, 4096))
                    s.sendall(payload)
                    got = b""
                    while len(got) < len(payload):
                        chunk = s.recv(len(payload) - len(got))
                        if not chunk:
                            self.failures.append(f"{n}: cut after {self.moved[n]} bytes")
                            return
                        got += chunk
                    if got != payload:
                        self.failures.append(f"{n}: bytes differ")
                        return
                    self.moved[n] += len(payload)
                    time.sleep(0.005)
        except OSError as exc:
            self.failures.append(f"{n}: {exc}")
