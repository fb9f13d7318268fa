"""
Building blocks for passive stream observers (``IStreamObserver``).

An observer decodes a copy of a connection's bytes to count what the peers
say. Two rules from the contract shape everything here:

- **bounded memory**: a peer may announce a 2 GiB frame; the observer keeps
  at most a frame header plus a bounded prefix of the body and *skips* the
  rest by counting bytes (:class:`ByteQueue`);
- **quiet after a decode error**: the first malformed frame is counted once
  (``decode_error``) and the observer ignores everything after, because it
  has lost the frame boundaries and any further count would be a guess
  (:class:`ObserverBase`).

Sans-IO: no Twisted, no sockets; the data path feeds bytes and receives
counts through ``emit``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from tsgate.interfaces import DecodeError, Emit

__all__ = ["ByteQueue", "DecodeError", "ObserverBase", "bounded_name"]


class ByteQueue:
    """
    A FIFO of received bytes that can skip ahead without buffering.

    ``discard(n)`` may be larger than what is buffered: the excess becomes a
    skip count that swallows future bytes as they arrive, so a huge frame
    body is never held in memory.
    """

    __slots__ = ("_buf", "_skip")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0

    def feed(self, data: bytes) -> None:
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = memoryview(data)[self._skip :]  # type: ignore[assignment]
            self._skip = 0
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def skipping(self) -> int:
        """Bytes still to be swallowed from future input."""
        return self._skip

    def snapshot(self) -> bytes:
        """
        Everything buffered, as bytes: parsers walk it with an index and
        then ``discard`` what they consumed once per read, which is much
        cheaper in Python than taking frames off the front one by one.
        """
        return bytes(self._buf)

    def peek(self, n: int, start: int = 0) -> bytes:
        return bytes(self._buf[start : start + n])

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        return self._buf.find(sub, start, len(self._buf) if end is None else end)

    def take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def discard(self, n: int) -> None:
        """Drop ``n`` bytes: those buffered now and, for the rest, future ones."""
        if n <= len(self._buf):
            del self._buf[:n]
        else:
            self._skip += n - len(self._buf)
            self._buf.clear()

    def clear(self) -> None:
        self._buf.clear()
        self._skip = 0


class ObserverBase:
    """
    The plumbing every observer shares: the ``IStreamObserver`` methods, a
    :class:`~tsgate.interfaces.DecodeError` (any protocol's subclass) turned
    into one ``decode_error`` count and silence afterwards, and attributes for the access log.

    Subclasses implement ``_client(data)`` and ``_server(data)`` and raise
    their protocol's ``DecodeError`` subclass on malformed input. Any *other* exception is a bug
    and is deliberately not swallowed here: the data path drops the observer
    and counts ``observer_crashed``, which is how bugs get noticed.
    """

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.quiet = False
        self._attributes: dict[str, str] = {}
        self.client_buf = ByteQueue()
        self.server_buf = ByteQueue()
        # Counts are gathered per read and emitted once per counter at its
        # end: a 256 KiB read of small commands would otherwise call emit
        # (a stats-registry update) thousands of times.
        self._counts: dict[str, int] = {}

    def buffered(self) -> int:
        """Bytes held right now (what the memory bound is about)."""
        return len(self.client_buf) + len(self.server_buf)

    def client_data(self, data: bytes) -> None:
        if not self.quiet:
            self._guard(self._client, data)

    def server_data(self, data: bytes) -> None:
        if not self.quiet:
            self._guard(self._server, data)

    def attributes(self) -> Mapping[str, str]:
        return dict(self._attributes)

    def _guard(self, method, data: bytes) -> None:  # type: ignore[no-untyped-def]
        try:
            method(data)
        except DecodeError as e:
            self._flush()
            self._fail(str(e))
        else:
            self._flush()

    def _count(self, name: str, amount: int = 1) -> None:
        """Count ``name``; emitted at the end of the current read."""
        counts = self._counts
        counts[name] = counts.get(name, 0) + amount

    def _flush(self) -> None:
        if self._counts:
            counts, self._counts = self._counts, {}
            for name, amount in counts.items():
                self._emit(name, amount)

    def _fail(self, reason: str) -> None:
        self.quiet = True
        self._release()
        self._emit("decode_error", 1)
        self._attributes["decode_error"] = reason[:80]

    def go_quiet(self) -> None:
        """Stop observing without an error (the stream became encrypted, say)."""
        self.quiet = True
        self._release()

    def _release(self) -> None:
        """Free the buffers once quiet."""
        self.client_buf.clear()
        self.server_buf.clear()

    def _client(self, data: bytes) -> None:
        raise NotImplementedError

    def _server(self, data: bytes) -> None:
        raise NotImplementedError


_LABEL = re.compile(r"[a-z0-9_]{1,40}\Z")


def bounded_name(name: str, known: Collection[str] | None = None, other: str = "unknown") -> str:
    """
    A counter-name component from peer-controlled text: peers must not be
    able to create unbounded numbers of counters, so ``name`` is kept only
    if it is in ``known`` (when given) and made of ``[a-z0-9_]``.
    """
    name = name.lower()
    if known is not None and name not in known:
        return other
    return name if _LABEL.match(name) else other
