"""
Record real conversations for the protocol samples in ``tests/data/``.

:class:`RecordingRelay` is a loopback TCP relay put between a real client
and a real server: it forwards both directions unchanged and records every
read, in the order the relay saw them (a request is recorded before it is
forwarded, so the recorded order is causal). A connection's recording is a
list of ``(direction, bytes)`` with direction ``"c"`` (client to server) or
``"s"``; :func:`write_capture` / :func:`read_capture` store it as
``<name>.cap``: records of ``direction (1 byte) | length (4 bytes, big
endian) | bytes``.

Threads and plain sockets, not Twisted: this runs only while (re)capturing
samples or in end-to-end fixtures, never in the gateway.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

Record = tuple[str, bytes]


class RecordingRelay:
    """Relay 127.0.0.1:<port> to ``upstream``, recording every connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[list[Record]] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def __enter__(self) -> RecordingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=10)
            server.settimeout(None)
            with self._lock:
                records: list[Record] = []
                self.connections.append(records)
                done = threading.Event()
                pumps = [
                    threading.Thread(
                        target=self._pump, args=(client, server, "c", records, done), daemon=True
                    ),
                    threading.Thread(
                        target=self._pump, args=(server, client, "s", records, done), daemon=True
                    ),
                ]
                self._threads += pumps
            for t in pumps:
                t.start()

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        direction: str,
        records: list[Record],
        done: threading.Event,
    ) -> None:
        try:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                with self._lock:
                    records.append((direction, data))
                try:
                    dst.sendall(data)
                except OSError:
                    break
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if done.is_set():
                src.close()
                dst.close()
            done.set()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every relayed connection has closed both ways."""
        for t in list(self._threads):
            t.join(timeout)

    def stop(self) -> None:
        self._stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.listener.close()
        self.wait_idle(5)


def write_capture(path: Path, records: Sequence[Record]) -> None:
    with open(path, "wb") as f:
        for direction, data in records:
            f.write(direction.encode("ascii") + struct.pack(">I", len(data)) + data)


def read_capture(path: Path) -> list[Record]:
    raw = Path(path).read_bytes()
    out: list[Record] = []
    i = 0
    while i < len(raw):
        direction = raw[i : i + 1].decode("ascii")
        (n,) = struct.unpack(">I", raw[i + 1 : i + 5])
        out.append((direction, raw[i + 5 : i + 5 + n]))
        i += 5 + n
    return out


def direction_bytes(records: Sequence[Record], direction: str) -> bytes:
    """Everything one side sent, concatenated."""
    return b"".join(data for d, data in records if d == direction)


def turns(records: Sequence[Record]) -> list[Record]:
    """Consecutive reads of one direction merged: the order that matters."""
    out: list[Record] = []
    for direction, data in records:
        if out and out[-1][0] == direction:
            out[-1] = (direction, out[-1][1] + data)
        else:
            out.append((direction, data))
    return out


def rechunk(records: Sequence[Record], cuts: Sequence[int]) -> Iterator[Record]:
    """
    The same conversation re-split: each turn cut at the given offsets
    (taken modulo the turn's length), as another TCP stack might deliver it.
    Turn order is kept, since a peer's reply can only follow what it answers.
    """
    for direction, data in turns(records):
        points = sorted({c % len(data) for c in cuts if len(data)} | {0, len(data)})
        for a, b in zip(points, points[1:]):
            yield direction, data[a:b]


def random_cuts(rng: random.Random, n: int, limit: int) -> list[int]:
    return [rng.randrange(limit) for _ in range(n)]


def observe(factory: object, records: Sequence[Record]) -> tuple[dict[str, int], dict[str, str]]:
    """
    Feed a conversation to a fresh observer from ``factory`` (an
    ``IStreamObserverFactory``); return its counters and attributes.
    """
    counts: dict[str, int] = {}

    def emit(name: str, amount: int) -> None:
        counts[name] = counts.get(name, 0) + amount

    observer = factory.new_observer(emit)  # type: ignore[attr-defined]
    for direction, data in records:
        if direction == "c":
            observer.client_data(data)
        else:
            observer.server_data(data)
    return counts, dict(observer.attributes())
