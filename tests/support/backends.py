"""Small threaded TCP servers for relay tests: sink, source, half-close, echo."""

from __future__ import annotations

import hashlib
import socket
import threading
from typing import Callable, Optional


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes (a sha256 chain)."""
    out = bytearray()
    block = b"tsgate"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


class ThreadedServer:
    """Accepts on a loopback port and runs ``handler(conn)`` in a thread per connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(2048)
        self.port = self.sock.getsockname()[1]
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.handler(conn)
        except BaseException as exc:  # recorded for the test to see
            self.errors.append(exc)

    def close(self) -> None:
        self.sock.close()


def sha256_sink(conn: socket.socket) -> None:
    """Read to EOF, answer the sha256 hex digest and byte count, close."""
    digest, total = hashlib.sha256(), 0
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    conn.sendall(f"{digest.hexdigest()} {total}\n".encode())


def source(size: int, block: int = 1 << 20) -> Callable[[socket.socket], None]:
    """Send ``size`` bytes of a repeated pattern block, then half-close and drain."""
    data = pattern(block)

    def handler(conn: socket.socket) -> None:
        sent = 0
        while sent < size:
            n = min(block, size - sent)
            conn.sendall(data[:n])
            sent += n
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass

    return handler


def echo(conn: socket.socket) -> None:
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        conn.sendall(chunk)
    conn.shutdown(socket.SHUT_WR)


class HalfCloseFirst:
    """Says "bye", half-closes, then counts what the client still sends."""

    def __init__(self) -> None:
        self.received: Optional[bytes] = None
        self.done = threading.Event()

    def __call__(self, conn: socket.socket) -> None:
        conn.sendall(b"bye\n")
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        self.received = data
        self.done.set()
