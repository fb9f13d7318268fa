"""
What a stream observer costs: MB/s through ``client_data``/``server_data``
with each observer plugin, against a no-op observer fed the same chunks.

Each observer is found by name with ``tsgate.plugins.load_plugins()`` and
fed its own protocol's real capture from ``tests/data/<protocol>/`` (the
largest ``*.trace`` / ``*.cap`` file there: records of direction byte,
big-endian uint32 length, bytes). The capture is repeated to ``--mb``
megabytes (both directions together) and cut into ``--chunk`` byte reads
(256 KiB, a large relay read), client and server reads interleaved in
proportion so replies follow their requests roughly as on a busy
connection. Counters go to a real ``tsgate.stats.Stats`` (as the data path
would, prefixed and labelled); latency histograms likewise, with
``time.monotonic`` as the clock.

Repeating a capture replays its handshake too; that is fine for MongoDB,
Kafka and Redis (a hello is just a command) but not for protocols with a
startup phase or a goodbye: :data:`CAPTURES` names, per protocol, the
capture and the records ``[start:end]`` that repeat (those before
``start`` are played once). An observer that still hits ``decode_error``
is flagged in the table: its number then measures a quiet observer.

A second table feeds the captured reads themselves (cycled), in socket
order: small reads, one request then its reply. That is how a lock-step
protocol (MySQL) really arrives, and a strict observer may rightly call
hundreds of pipelined MySQL commands in one 256 KiB read a decode error.

Usage: ``python3 bench/observers.py [--mb 200] [--runs 3] [names...]``
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from collections.abc import Iterator
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tsgate.stats import Stats  # noqa: E402

DATA = os.path.join(os.path.dirname(HERE), "tests", "data")
#: protocol -> (capture file, first repeated record, end of repeated records).
#: Protocols not listed use their largest capture, all of it repeated.
CAPTURES: dict[str, tuple[str, int, int | None]] = {
    "mongo": ("pymongo_session.trace", 0, None),
    "kafka": ("kafka_python_producer.trace", 0, None),
    # startup and SCRAM exchange once; then BEGIN .. DEALLOCATE ALL, not Terminate
    "postgres": ("psycopg_extended.cap", 6, 23),
    # greeting and login once; then the queries, not COM_QUIT
    "mysql": ("mariadb_cli.cap", 3, 9),
}
Record = tuple[str, bytes]


def read_records(path: str) -> list[Record]:
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos + 5 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos + 1)
        out.append((chr(data[pos]).lower(), data[pos + 5 : pos + 5 + n]))
        pos += 5 + n
    return out


def find_capture(protocol: str) -> tuple[str, list[Record]] | None:
    folder = os.path.join(DATA, protocol)
    if not os.path.isdir(folder):
        return None
    if protocol in CAPTURES:
        name = CAPTURES[protocol][0]
        return name, read_records(os.path.join(folder, name))
    best: tuple[int, str, list[Record]] | None = None
    for name in sorted(os.listdir(folder)):
        if not name.endswith((".trace", ".cap")):
            continue
        records = read_records(os.path.join(folder, name))
        size = sum(len(b) for _, b in records)
        if best is None or size > best[0]:
            best = (size, name, records)
    return (best[1], best[2]) if best else None


class Stream:
    """One direction: a prefix, then a block repeated forever, cut into chunks."""

    def __init__(self, prefix: bytes, block: bytes, chunk: int) -> None:
        self.prefix, self.block, self.chunk = prefix, block, chunk
        # Enough copies that any chunk-sized window of the repetition is a slice.
        self.ring = block * (chunk // max(len(block), 1) + 2)

    def chunks(self, total: int) -> Iterator[bytes]:
        sent = 0
        data = self.prefix
        while data and sent < total:
            piece = data[: self.chunk]
            data = data[self.chunk :]
            sent += len(piece)
            yield piece
        offset = 0
        period = len(self.block)
        while sent < total and period:
            piece = self.ring[offset : offset + min(self.chunk, total - sent)]
            offset = (offset + len(piece)) % period
            sent += len(piece)
            yield piece


def interleaved(client: Stream, server: Stream, total: int) -> Iterator[tuple[bool, bytes]]:
    """
    Client and server reads in proportion to their share of the capture.
    Made on the fly (a 256 KiB slice copy each, a cost the no-op run pays
    too) so that 200 MB never sit in memory.
    """
    c_share = len(client.block) / max(len(client.block) + len(server.block), 1)
    c_total = int(total * c_share)
    c_iter, s_iter = client.chunks(c_total), server.chunks(total - c_total)
    c_sent = s_sent = 0
    c_next, s_next = next(c_iter, None), next(s_iter, None)
    while c_next is not None or s_next is not None:
        behind = s_next is None or (
            c_next is not None and c_sent / max(c_total, 1) <= s_sent / max(total - c_total, 1)
        )
        if behind and c_next is not None:
            yield True, c_next
            c_sent += len(c_next)
            c_next = next(c_iter, None)
        elif s_next is not None:
            yield False, s_next
            s_sent += len(s_next)
            s_next = next(s_iter, None)


class NoopObserver:
    def client_data(self, data: bytes) -> None:
        pass

    def server_data(self, data: bytes) -> None:
        pass


def run(make: Callable[[], Any], reads: Callable[[], Iterator[tuple[bool, bytes]]]) -> float:
    observer = make()
    client, server = observer.client_data, observer.server_data
    start = time.perf_counter()
    for is_client, data in reads():
        (client if is_client else server)(data)
    return time.perf_counter() - start


def load_observers() -> dict[str, Any]:
    try:
        from tsgate.plugins import load_plugins

        return dict(load_plugins().observers)
    except ImportError:  # discovery not there: the two built-ins we know
        from tsgate.plugins.kafka import kafka_observer_factory
        from tsgate.plugins.mongo import mongo_observer_factory

        return {"mongo": mongo_observer_factory, "kafka": kafka_observer_factory}


def replayed(
    once: list[Record], repeated: list[Record], total: int
) -> Iterator[tuple[bool, bytes]]:
    """The captured reads themselves, in socket order, the repeated part cycled."""
    sent = 0
    for direction, data in once:
        sent += len(data)
        yield direction == "c", data
    while sent < total and repeated:
        for direction, data in repeated:
            sent += len(data)
            yield direction == "c", data


def measure(
    name: str, factory: Any, total: int, chunk: int, runs: int, as_captured: bool = False
) -> tuple[str, ...]:
    """
    One table row: the observer's MB/s with the stats registry and with a
    null sink. ``as_captured`` feeds the recorded reads (lock-step request
    and reply, small reads) instead of ``chunk``-sized reads.
    """
    if factory is None:
        return (name, "-", "no such observer plugin", "", "", "", "", "")
    protocol = getattr(factory, "protocol", name)
    found = find_capture(protocol)
    if found is None:
        return (name, "-", f"no capture in tests/data/{protocol}/", "", "", "", "", "")
    sample, records = found
    _, start, end = CAPTURES.get(protocol, (sample, 0, None))
    once, repeated = records[:start], records[start:end]

    def side(direction: str, part: list[Record]) -> bytes:
        return b"".join(b for d, b in part if d == direction)

    client = Stream(side("c", once), side("c", repeated), chunk)
    server = Stream(side("s", once), side("s", repeated), chunk)

    def reads() -> Iterator[tuple[bool, bytes]]:
        if as_captured:
            return replayed(once, repeated, total)
        return interleaved(client, server, total)

    fed = sum(len(b) for _, b in reads())
    stats = Stats()
    prefix = f"{protocol}."

    def emit(suffix: str, amount: int) -> None:
        stats.inc(prefix + suffix, amount, listener="bench")

    def observe(suffix: str, value: float) -> None:
        stats.observe(prefix + suffix, value, listener="bench")

    def null_emit(suffix: str, amount: int) -> None:
        pass

    def null_observe(suffix: str, value: float) -> None:
        pass

    def maker(e: Callable[[str, int], None], o: Callable[[str, float], None]) -> Any:
        if hasattr(factory, "new_timed_observer"):
            return lambda: factory.new_timed_observer(e, o, time.monotonic)
        return lambda: factory.new_observer(e)

    noop = min(run(NoopObserver, reads) for _ in range(runs))
    best = min(run(maker(emit, observe), reads) for _ in range(runs))
    bare = min(run(maker(null_emit, null_observe), reads) for _ in range(runs))
    errors = sum(stats.counters.get(f"{protocol}.decode_error", {}).values())
    return (
        name,
        sample,
        f"{fed / 1e6:.0f}",
        f"{fed / noop / 1e6:,.0f}",
        f"{fed / best / 1e6:,.1f}",
        f"{fed / bare / 1e6:,.1f}",
        f"{(best - noop) / (fed / 1e6) * 1e3:.1f}",
        "DECODE_ERROR: measures a quiet observer" if errors else "",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="observer plugin names (default: all)")
    parser.add_argument("--mb", type=float, default=200.0, help="MB fed per run")
    parser.add_argument("--chunk", type=int, default=256 * 1024, help="bytes per read")
    parser.add_argument("--runs", type=int, default=2, help="best of N runs")
    args = parser.parse_args(argv)
    total = int(args.mb * 1e6)
    observers = load_observers()
    names = args.names or sorted(observers)
    for as_captured in (False, True):
        print(
            "reads as captured (lock-step, small reads):"
            if as_captured
            else f"reads of {args.chunk} bytes, client and server interleaved:"
        )
        rows = [
            measure(name, observers.get(name), total, args.chunk, args.runs, as_captured)
            for name in names
        ]
        table(rows)
        print()


def table(rows: list[tuple[str, ...]]) -> None:
    header = (
        "observer",
        "capture",
        "MB",
        "no-op MB/s",
        "MB/s",
        "MB/s null sink",
        "ms/MB added",
        "note",
    )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
