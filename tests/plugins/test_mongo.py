"""
Tests for the ``mongo`` plugins (tsgate.hints.mongo, tsgate.plugins.mongo),
driven by bytes pymongo 4.20 and 3.11 really sent (tests/data/mongo, made by
its capture.py) and by messages derived from them.
"""

from __future__ import annotations

import os
import struct
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

from tests.support.traces import Recorder, Trace, read_trace
from tests.support.traces import replay as replay_through
from tsgate.hints import mongo as wire
from tsgate.hints.mongo import MAX_OUTSTANDING, PER_CONNECTION_NAMES, MongoObserverFactory
from tsgate.interfaces import (
    NEED_MORE,
    Hint,
    HintParseError,
    IHintParser,
    IStreamObserver,
    IStreamObserverFactory,
    ITimedStreamObserverFactory,
    NeedMore,
    NotMine,
)
from tsgate.plugins.mongo import mongo_hint_parser, mongo_observer_factory

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "mongo")
KAFKA_DATA = os.path.join(os.path.dirname(__file__), "..", "data", "kafka")


def sample(name: str, folder: str = DATA) -> bytes:
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


def trace(name: str) -> Trace:
    """A recorded conversation of this protocol (see tests/support/traces.py)."""
    return read_trace(Path(DATA) / name)


def replay(records: Trace, factory: MongoObserverFactory | None = None) -> Recorder:
    """Feed a two-way capture through a fresh timed observer, one tick per read."""
    return replay_through(records, factory or MongoObserverFactory())


Outcome = Union[NeedMore, NotMine, Hint, str]


def outcome(data: bytes) -> Outcome:
    try:
        return mongo_hint_parser.parse(data)
    except HintParseError:
        return "HintParseError"


# --- plugin declarations ----------------------------------------------------


def test_plugins_provide_their_interfaces() -> None:
    """Both module-level instances are IPlugins providing the documented interfaces."""
    assert verifyObject(IHintParser, mongo_hint_parser)
    assert IPlugin.providedBy(mongo_hint_parser)
    assert verifyObject(ITimedStreamObserverFactory, mongo_observer_factory)
    assert IStreamObserverFactory.providedBy(mongo_observer_factory)
    assert IPlugin.providedBy(mongo_observer_factory)
    assert mongo_observer_factory.istio_protocols == ("MONGO",)
    assert mongo_observer_factory.port_name_prefixes == ("mongo",)
    assert verifyObject(IStreamObserver, mongo_observer_factory.new_observer(lambda n, a: None))


def test_plugins_are_discovered() -> None:
    """load_plugins finds the built-in mongo hint parser and observer by name."""
    from tsgate.plugins import load_plugins

    found = load_plugins()
    assert found.hint_parsers["mongo"] is mongo_hint_parser
    assert found.observers["mongo"] is mongo_observer_factory


# --- hint parser ------------------------------------------------------------

HINTS = [
    (
        "pymongo_hello.bin",  # pymongo 4.20: OP_MSG ismaster with $db admin
        {"database": "admin", "command": "ismaster", "app_name": "tsgate-capture",
         "driver": "PyMongo|c 4.20.1|"},
    ),
    (
        "pymongo3_hello.bin",  # pymongo 3.11: legacy OP_QUERY admin.$cmd isMaster
        {"database": "admin", "command": "ismaster", "app_name": "tsgate-capture",
         "driver": "PyMongo 3.11.0"},
    ),
]  # fmt: skip


@pytest.mark.parametrize("name, attributes", HINTS)
def test_hint_from_real_handshake(name: str, attributes: dict[str, str]) -> None:
    """The first message of a real pymongo connection yields its client metadata."""
    data = sample(name)
    assert mongo_hint_parser.parse(data) == Hint("mongo", attributes, length=len(data))


@pytest.mark.parametrize("name", [n for n, _ in HINTS])
def test_hint_needs_the_whole_handshake(name: str) -> None:
    """Every strict prefix of a handshake is NEED_MORE (none is NotMine or an error)."""
    data = sample(name)
    for cut in range(len(data)):
        assert mongo_hint_parser.parse(data[:cut]) is NEED_MORE, cut


def test_hint_ignores_what_follows_the_handshake() -> None:
    """Bytes after the first message do not change the hint (pipelined clients)."""
    data = sample("pymongo_session_client.bin")
    first = sample("pymongo_hello.bin")
    assert data.startswith(first)
    assert mongo_hint_parser.parse(data) == mongo_hint_parser.parse(first)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS record header
        sample("kafka_python_apiversions.bin", KAFKA_DATA),  # real Kafka bytes
        sample("pymongo_session_server.bin"),  # a reply cannot open a connection
    ],
    ids=["http", "tls", "kafka", "mongo-reply"],
)
def test_hint_not_mine(data: bytes) -> None:
    """Other protocols (and server-side Mongo bytes) are NotMine from the header."""
    assert isinstance(mongo_hint_parser.parse(data), NotMine)


def test_hint_malformed_body_is_the_one_error() -> None:
    """A plausible header with a broken BSON body raises HintParseError."""
    data = bytearray(sample("pymongo_hello.bin"))
    struct.pack_into("<i", data, 21, 3)  # body document length 3 (< 5)
    with pytest.raises(HintParseError):
        mongo_hint_parser.parse(bytes(data))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(name=st.sampled_from([n for n, _ in HINTS]), cuts=st.lists(st.integers(0, 500)))
def test_hint_any_split_same_result(name: str, cuts: list[int]) -> None:
    """Arriving in any pieces, the bytes give NEED_MORE until whole, then the same Hint."""
    data = sample(name)
    expected = mongo_hint_parser.parse(data)
    result = None
    for cut in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        result = mongo_hint_parser.parse(data[:cut])
        if cut < len(data):
            assert result is NEED_MORE
    assert result == expected


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=500)
@given(
    name=st.sampled_from([n for n, _ in HINTS]),
    cut=st.integers(0, 400),
    garbage=st.binary(max_size=200),
)
def test_hint_truncation_plus_garbage(name: str, cut: int, garbage: bytes) -> None:
    """A cut handshake plus random bytes gives only a ParseResult or HintParseError."""
    result = outcome(sample(name)[:cut] + garbage)
    assert isinstance(result, (NeedMore, NotMine, Hint)) or result == "HintParseError"


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=500)
@given(
    name=st.sampled_from([n for n, _ in HINTS]),
    edits=st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_hint_corrupted_bytes(name: str, edits: list[tuple[int, int]]) -> None:
    """A real handshake with a few bytes overwritten: still only the one error type."""
    data = bytearray(sample(name))
    for where, value in edits:
        data[where % len(data)] = value
    result = outcome(bytes(data))
    assert isinstance(result, (NeedMore, NotMine, Hint)) or result == "HintParseError"


# --- decoder ----------------------------------------------------------------

# What capture.exercise() made pymongo send, message by message:
# (op, command, database, collection, kind-1 sequences).
SESSION = [
    ("op_msg", "ismaster", "admin", None, ()),
    ("op_msg", "insert", "shop", "users", (("documents", 1),)),
    ("op_msg", "insert", "shop", "users", (("documents", 5),)),
    ("op_msg", "find", "shop", "users", ()),
    ("op_msg", "getMore", "shop", "users", ()),
    ("op_msg", "update", "shop", "users", (("updates", 1),)),
    ("op_msg", "delete", "shop", "users", (("deletes", 1),)),
    ("op_msg", "aggregate", "shop", "users", ()),
    ("op_msg", "insert", "shop", "audit", (("documents", 1),)),
    ("op_msg", "noSuchCommand", "shop", None, ()),
    ("op_msg", "drop", "shop", "users", ()),
    ("op_msg", "drop", "shop", "missing", ()),
    ("op_msg", "ping", "shop", None, ()),
    ("op_msg", "endSessions", "admin", None, ()),
]


def messages(data: bytes) -> Iterator[wire.MongoMessage]:
    for header, prefix in wire.MessageFramer().feed(data):
        assert header == wire.parse_header(prefix)
        yield wire.decode_message(prefix, header)


@pytest.mark.parametrize("name", ["pymongo_session", "pymongo3_session"])
def test_decode_client_session(name: str) -> None:
    """Each request of the real session decodes to what the application did."""
    got = [
        (m.header.op_name, m.command, m.database, m.collection, m.sequences)
        for m in messages(sample(f"{name}_client.bin"))
    ]
    expected = list(SESSION)
    if name == "pymongo3_session":  # the 3.x handshake is OP_QUERY on admin.$cmd
        expected[0] = ("op_query", "ismaster", "admin", None, ())
    assert got == expected


def test_decode_flags_and_replies() -> None:
    """w=0 sets moreToCome; the two failing commands' replies have ok: 0."""
    requests = list(messages(sample("pymongo_session_client.bin")))
    assert [m.more_to_come for m in requests].count(True) == 1
    assert requests[8].more_to_come  # the w=0 insert into audit
    replies = list(messages(sample("pymongo_session_server.bin")))
    assert [r.ok for r in replies].count(False) == 2
    answered = [m for m in requests if not m.more_to_come]
    assert [r.header.response_to for r in replies] == [m.header.request_id for m in answered]


def test_decode_legacy_reply() -> None:
    """pymongo 3.x's isMaster is answered by an OP_REPLY with one ok:1 document."""
    reply = next(messages(sample("pymongo3_session_server.bin")))
    assert reply.header.op_code == wire.OP_REPLY
    assert (reply.number_returned, reply.ok) == (1, True)


def test_decode_compressed_header_only() -> None:
    """OP_COMPRESSED is reported by original opcode and compressor, not inflated."""
    got = {
        (m.header.op_name, m.original_op_code, m.compressor)
        for m in messages(sample("pymongo_zlib_client.bin"))
    }
    assert got == {("op_msg", None, None), ("op_compressed", wire.OP_MSG, "zlib")}


# --- observer ---------------------------------------------------------------

SESSION_COUNTERS = {
    "op_msg": 27,  # 14 requests, 13 replies (the w=0 insert gets none)
    "cmd.ismaster.total": 1,
    "cmd.insert.total": 3,
    "cmd.insert.documents": 7,
    "cmd.find.total": 1,
    "cmd.getMore.total": 1,
    "cmd.update.total": 1,
    "cmd.update.documents": 1,
    "cmd.delete.total": 1,
    "cmd.delete.documents": 1,
    "cmd.aggregate.total": 1,
    "cmd.noSuchCommand.total": 1,
    "cmd.noSuchCommand.error": 1,
    "cmd.drop.total": 2,
    "cmd.drop.error": 1,
    "cmd.ping.total": 1,
    "cmd.endSessions.total": 1,
    "collection.shop.users.insert": 2,
    "collection.shop.audit.insert": 1,
    "collection.shop.users.find": 1,
    "collection.shop.users.getMore": 1,
    "collection.shop.users.update": 1,
    "collection.shop.users.delete": 1,
    "collection.shop.users.aggregate": 1,
    "collection.shop.users.drop": 1,
    "collection.shop.missing.drop": 1,
    "reply.error": 2,
}


def test_observer_counts_real_session() -> None:
    """The pymongo 4 session gives Envoy-like op, command, collection and error counters."""
    rec = replay(trace("pymongo_session.trace"))
    assert dict(rec.counters) == SESSION_COUNTERS


def test_observer_legacy_handshake() -> None:
    """With pymongo 3.x the handshake counts as op_query answered by op_reply."""
    rec = replay(trace("pymongo3_session.trace"))
    expected = dict(SESSION_COUNTERS, op_msg=25, op_query=1, op_reply=1)
    assert dict(rec.counters) == expected


def test_observer_compressed_session() -> None:
    """Compressed traffic is counted by header; replies are still matched and timed."""
    rec = replay(trace("pymongo_zlib.trace"))
    assert rec.counters["op_compressed"] == 25
    assert rec.counters["compressed.op_msg"] == 25
    assert rec.counters["compressor.zlib"] == 25
    assert rec.counters["reply.unmatched"] == 0
    assert len([n for n, _ in rec.samples if n == "reply_time"]) == 13


def test_observer_latency_per_command() -> None:
    """Each reply is timed against its request by responseTo; per command too."""
    rec = replay(trace("pymongo_session.trace"))
    overall = [v for n, v in rec.samples if n == "reply_time"]
    assert len(overall) == 13 and all(v > 0 for v in overall)
    per_command = Counter(n for n, _ in rec.samples if n != "reply_time")
    assert per_command["cmd.insert.reply_time"] == 2  # the w=0 insert has no reply
    assert per_command["cmd.find.reply_time"] == 1
    assert sum(per_command.values()) == 13


def test_observer_attributes() -> None:
    """The access log gets the handshake metadata and the application's database."""
    rec = Recorder()
    observer = MongoObserverFactory().new_observer(rec.emit)
    observer.client_data(sample("pymongo_session_client.bin"))
    assert observer.attributes() == {
        "database": "shop",
        "app_name": "tsgate-capture",
        "driver": "PyMongo|c 4.20.1|",
    }


def rechunk(records: Trace, cuts: list[int]) -> Trace:
    """The same two-way stream, each record split at the given offsets."""
    out: Trace = []
    for i, (direction, data) in enumerate(records):
        points = sorted({c % (len(data) + 1) for c in cuts[i::7]} | {0, len(data)})
        out += [(direction, data[a:b]) for a, b in zip(points, points[1:])]
    return out


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=100)
@given(
    name=st.sampled_from(["pymongo_session.trace", "pymongo3_session.trace", "pymongo_zlib.trace"]),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=200),
)
def test_observer_any_chunking_same_counters(name: str, cuts: list[int]) -> None:
    """However the reads are split, the counters are the same."""
    records = trace(name)
    assert replay(rechunk(records, cuts)).counters == replay(records).counters


def big_insert(total: int) -> bytes:
    """
    The real insert_many message with its document sequence padded (with
    copies of its own first document) until the message is ``total`` bytes.
    """
    message = sample("pymongo_session_client.bin")
    pos = 0
    for _ in range(2):  # skip the handshake and insert_one: take insert_many
        pos += struct.unpack_from("<i", message, pos)[0]
    msg = bytearray(message[pos : pos + struct.unpack_from("<i", message, pos)[0]])
    seq_at = 16 + 4
    while msg[seq_at] != 1:  # step over the body section to the document sequence
        seq_at += 1 + struct.unpack_from("<i", msg, seq_at + 1)[0]
    seq_at += 1
    seq_size = struct.unpack_from("<i", msg, seq_at)[0]
    doc_at = msg.index(b"\0", seq_at + 4) + 1
    doc = bytes(msg[doc_at : doc_at + struct.unpack_from("<i", msg, doc_at)[0]])
    copies = (total - len(msg)) // len(doc)
    struct.pack_into("<i", msg, seq_at, seq_size + copies * len(doc))
    struct.pack_into("<i", msg, 0, len(msg) + copies * len(doc))
    end = seq_at + seq_size
    return bytes(msg[:end]) + doc * copies + bytes(msg[end:])


def test_observer_memory_bounded_for_huge_message() -> None:
    """A 40 MB insert is skipped by counting: memory stays far below its size."""
    data = big_insert(40_000_000)
    rec = Recorder()
    observer = MongoObserverFactory().new_observer(rec.emit)
    tracemalloc.start()
    try:
        for i in range(0, len(data), 65536):
            observer.client_data(data[i : i + 65536])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the slices fed are 64 KiB; the kept prefix 16 KiB
    assert rec.counters["cmd.insert.total"] == 1
    assert rec.counters["cmd.insert.documents"] > 100  # counted within the prefix
    assert "decode_error" not in rec.counters


def test_observer_declared_length_beyond_limit() -> None:
    """A header declaring more than any server accepts is a decode error, at once."""
    rec = Recorder()
    observer = MongoObserverFactory().new_observer(rec.emit)
    observer.client_data(struct.pack("<iiii", 1 << 30, 1, 0, wire.OP_MSG))
    assert dict(rec.counters) == {"decode_error": 1}


def test_observer_quiet_after_decode_error() -> None:
    """After one decode_error nothing more is counted, whatever follows."""
    rec = Recorder()
    observer = MongoObserverFactory().new_observer(rec.emit)
    observer.client_data(b"\x16\x03\x01\x00\xa5" + bytes(200))
    for direction, data in trace("pymongo_session.trace"):
        (observer.client_data if direction == "C" else observer.server_data)(data)
    assert dict(rec.counters) == {"decode_error": 1}
    assert observer.attributes() == {}


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(
    cut=st.integers(0, 4000),
    garbage=st.binary(max_size=300),
    server=st.binary(max_size=300),
)
def test_observer_never_raises(cut: int, garbage: bytes, server: bytes) -> None:
    """Truncated real traffic plus random bytes: counters at most, never an exception."""
    rec = Recorder()
    observer = MongoObserverFactory().new_timed_observer(rec.emit, rec.observe, rec.clock)
    observer.client_data(sample("pymongo_session_client.bin")[:cut] + garbage)
    observer.server_data(sample("pymongo_session_server.bin")[:cut] + server)
    assert rec.counters["decode_error"] <= 1
    observer.attributes()


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(
    edits=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_observer_corrupted_session_never_raises(edits: list[tuple[int, int]]) -> None:
    """The real session with bytes overwritten in both directions never raises."""
    rec = Recorder()
    observer = MongoObserverFactory().new_timed_observer(rec.emit, rec.observe, rec.clock)
    for direction, data in trace("pymongo_session.trace"):
        chunk = bytearray(data)
        for where, value in edits:
            if where < len(chunk):
                chunk[where] = value
        (observer.client_data if direction == "C" else observer.server_data)(bytes(chunk))
    assert rec.counters["decode_error"] <= 1


def op_msg(command: str, collection: str, request_id: int = 1) -> bytes:
    """A minimal OP_MSG ``{<command>: <collection>, $db: "db"}`` (for label-cap tests)."""

    def string(key: str, value: str) -> bytes:
        raw = value.encode() + b"\0"
        return b"\x02" + key.encode() + b"\0" + struct.pack("<i", len(raw)) + raw

    elements = string(command, collection) + string("$db", "db")
    doc = struct.pack("<i", 4 + len(elements) + 1) + elements + b"\0"
    body = struct.pack("<I", 0) + b"\0" + doc
    return struct.pack("<iiii", 16 + len(body), request_id, 0, wire.OP_MSG) + body


def test_label_cardinality_per_connection() -> None:
    """Past 32 distinct names on a connection, commands fold into _other, counted."""
    rec = Recorder()
    observer = MongoObserverFactory().new_observer(rec.emit)
    for i in range(PER_CONNECTION_NAMES + 8):
        observer.client_data(op_msg(f"cmd{i}", "c"))
    commands = {n for n in rec.counters if n.startswith("cmd.") and n.endswith(".total")}
    assert len(commands) == PER_CONNECTION_NAMES + 1
    assert rec.counters["cmd._other.total"] == 8
    assert rec.counters["label_overflow"] >= 8


def test_label_cardinality_process_wide() -> None:
    """Across connections the factory admits at most MAX_COMMANDS names in all."""
    factory = MongoObserverFactory()
    rec = Recorder()
    for conn in range(12):
        observer = factory.new_observer(rec.emit)
        for i in range(30):
            observer.client_data(op_msg(f"c{conn}_{i}", "x"))
    commands = {n for n in rec.counters if n.startswith("cmd.") and n.endswith(".total")}
    assert len(commands) == 256 + 1  # MAX_COMMANDS plus _other
    assert rec.counters["cmd._other.total"] == 12 * 30 - 256


def test_label_rejects_odd_names() -> None:
    """A command name that does not look like one never becomes a counter name."""
    rec = Recorder()
    observer = MongoObserverFactory().new_observer(rec.emit)
    observer.client_data(op_msg("drop table; {x}", "c"))
    assert rec.counters["cmd._other.total"] == 1


def test_outstanding_table_is_bounded() -> None:
    """Requests never answered are forgotten past MAX_OUTSTANDING, and counted."""
    rec = Recorder()
    observer = MongoObserverFactory().new_observer(rec.emit)
    for i in range(MAX_OUTSTANDING + 10):
        observer.client_data(op_msg("find", "c", request_id=i + 1))
    assert rec.counters["outstanding_overflow"] == 10


def reply(request_id: int, response_to: int, flags: int = 0, ok: float = 1.0) -> bytes:
    """A minimal OP_MSG reply ``{ok: <ok>}`` with the given flags."""
    elements = b"\x01ok\0" + struct.pack("<d", ok)
    doc = struct.pack("<i", 4 + len(elements) + 1) + elements + b"\0"
    body = struct.pack("<I", flags) + b"\0" + doc
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, wire.OP_MSG) + body


def test_exhaust_replies_follow_the_chain() -> None:
    """
    Streaming (exhaust) replies answer the previous reply, not the request:
    each moreToCome reply is followed by one answering it, all matched, the
    first one timed.
    """
    rec = Recorder()
    observer = MongoObserverFactory().new_timed_observer(rec.emit, rec.observe, rec.clock)
    observer.client_data(op_msg("getMore", "c", request_id=7))
    rec.now = 2.0
    observer.server_data(reply(100, 7, flags=wire.MORE_TO_COME))
    observer.server_data(reply(101, 100, flags=wire.MORE_TO_COME))
    observer.server_data(reply(102, 101, ok=0.0))
    assert rec.counters["reply.unmatched"] == 0
    assert rec.counters["op_msg"] == 4
    assert rec.counters["cmd.getMore.error"] == 1
    assert rec.samples == [("reply_time", 2.0), ("cmd.getMore.reply_time", 2.0)]
