"""tsgate.hints.stream: what every passive observer shares."""

from __future__ import annotations

import pytest

from tsgate.hints.stream import ByteQueue, DecodeError, ObserverBase, bounded_name
from tsgate.interfaces import DecodeError as BaseDecodeError


def test_decode_error_is_the_interfaces_base() -> None:
    assert DecodeError is BaseDecodeError


def test_byte_queue_fifo_peek_find_take() -> None:
    q = ByteQueue()
    q.feed(b"hello ")
    q.feed(b"world\r\n")
    assert len(q) == 13
    assert q.peek(5) == b"hello" and q.peek(5, start=6) == b"world"
    assert q.find(b"\r\n") == 11 and q.find(b"\r\n", 0, 11) == -1
    assert q.snapshot() == b"hello world\r\n"
    assert q.take(6) == b"hello "
    assert len(q) == 7 and q.snapshot() == b"world\r\n"


def test_byte_queue_discard_past_the_buffer_skips_future_bytes() -> None:
    """A huge frame body is counted past, never held."""
    q = ByteQueue()
    q.feed(b"abc")
    q.discard(10)  # 3 now, 7 from future reads
    assert len(q) == 0 and q.skipping == 7
    q.feed(b"12345")
    assert len(q) == 0 and q.skipping == 2
    q.feed(b"67NEXT")
    assert q.skipping == 0 and q.snapshot() == b"NEXT"
    q.discard(2)
    assert q.snapshot() == b"XT"
    q.discard(5)
    q.clear()
    assert len(q) == 0 and q.skipping == 0


class _Lines(ObserverBase):
    """A toy protocol: client lines must start with '+', counted per line."""

    def _client(self, data: bytes) -> None:
        self.client_buf.feed(data)
        while (end := self.client_buf.find(b"\n")) >= 0:
            line = self.client_buf.take(end + 1)
            if not line.startswith(b"+"):
                raise _LinesDecodeError(f"bad line {line[:10]!r}")
            self._count("line")

    def _server(self, data: bytes) -> None:
        self.server_buf.feed(data)


class _LinesDecodeError(DecodeError):
    pass


def _observer() -> tuple[_Lines, list[tuple[str, int]]]:
    emitted: list[tuple[str, int]] = []
    return _Lines(lambda name, amount: emitted.append((name, amount))), emitted


def test_counts_are_emitted_once_per_read() -> None:
    observer, emitted = _observer()
    observer.client_data(b"+a\n+b\n+c\n")
    assert emitted == [("line", 3)]
    observer.client_data(b"+d")
    assert emitted == [("line", 3)]  # nothing counted in that read
    observer.client_data(b"\n")
    assert emitted == [("line", 3), ("line", 1)]


def test_a_decode_error_counts_once_then_quiet_and_frees_buffers() -> None:
    observer, emitted = _observer()
    observer.server_data(b"held")
    observer.client_data(b"+ok\nbad\n+never\n")
    # the count before the error is still emitted, then decode_error once
    assert emitted == [("line", 1), ("decode_error", 1)]
    assert observer.quiet and observer.buffered() == 0
    assert observer.attributes()["decode_error"].startswith("bad line")
    observer.client_data(b"+more\n")
    observer.server_data(b"more")
    assert emitted == [("line", 1), ("decode_error", 1)]


def test_go_quiet_stops_without_an_error() -> None:
    observer, emitted = _observer()
    observer.client_data(b"+partial")
    observer.go_quiet()
    observer.client_data(b"\n+x\n")
    assert emitted == [] and observer.buffered() == 0
    assert "decode_error" not in observer.attributes()


def test_other_exceptions_are_bugs_and_escape() -> None:
    """The data path drops a crashing observer and counts it; the base must not hide bugs."""

    class Broken(ObserverBase):
        def _client(self, data: bytes) -> None:
            raise KeyError("bug")

    observer = Broken(lambda name, amount: None)
    with pytest.raises(KeyError):
        observer.client_data(b"x")


def test_attributes_are_a_copy() -> None:
    observer, _ = _observer()
    observer.attributes()["user"] = "mallory"  # type: ignore[index]
    assert observer.attributes() == {}


@pytest.mark.parametrize("name,known,expected", [
    ("GET", None, "get"),
    ("get_or_set", None, "get_or_set"),
    ("x" * 41, None, "unknown"),
    ("drop table", None, "unknown"),
    ("", None, "unknown"),
    ("get", {"get", "set"}, "get"),
    ("flushall", {"get", "set"}, "unknown"),
])
def test_bounded_name(name: str, known: set[str] | None, expected: str) -> None:
    assert bounded_name(name, known) == expected


def test_bounded_name_other_label() -> None:
    assert bounded_name("weird name", other="_other") == "_other"
