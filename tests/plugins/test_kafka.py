"""
Tests for the ``kafka`` plugins (tsgate.hints.kafka, tsgate.plugins.kafka),
driven by bytes kafka-python 3.0.12 really sent (tests/data/kafka, made by
its capture.py) and by frames derived from them.
"""

from __future__ import annotations

import os
import struct
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

from tests.support.traces import Recorder, Trace, read_trace
from tests.support.traces import replay as replay_through
from tsgate.hints import kafka as wire
from tsgate.hints.kafka import MAX_OUTSTANDING, KafkaObserverFactory
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
from tsgate.plugins.kafka import kafka_hint_parser, kafka_observer_factory

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "kafka")
MONGO_DATA = os.path.join(os.path.dirname(__file__), "..", "data", "mongo")


def sample(name: str, folder: str = DATA) -> bytes:
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


def trace(name: str) -> Trace:
    """A recorded conversation of this protocol (see tests/support/traces.py)."""
    return read_trace(Path(DATA) / name)


def frames(data: bytes) -> list[bytes]:
    """Whole size-prefixed frames of a stream."""
    out, pos = [], 0
    while pos < len(data):
        end = pos + 4 + struct.unpack_from(">i", data, pos)[0]
        out.append(data[pos:end])
        pos = end
    return out


def timed(rec: Recorder) -> IStreamObserver:
    return KafkaObserverFactory().new_timed_observer(rec.emit, rec.observe, rec.clock)


def replay(records: Trace) -> Recorder:
    """Feed a two-way capture through a fresh timed observer, one tick per read."""
    return replay_through(records, KafkaObserverFactory())


Outcome = Union[NeedMore, NotMine, Hint, str]


def outcome(data: bytes) -> Outcome:
    try:
        return kafka_hint_parser.parse(data)
    except HintParseError:
        return "HintParseError"


# --- plugin declarations ----------------------------------------------------


def test_plugins_provide_their_interfaces() -> None:
    """Both module-level instances are IPlugins providing the documented interfaces."""
    assert verifyObject(IHintParser, kafka_hint_parser)
    assert IPlugin.providedBy(kafka_hint_parser)
    assert verifyObject(ITimedStreamObserverFactory, kafka_observer_factory)
    assert IStreamObserverFactory.providedBy(kafka_observer_factory)
    assert IPlugin.providedBy(kafka_observer_factory)
    assert kafka_observer_factory.istio_protocols == ()  # Istio has no KAFKA protocol
    assert kafka_observer_factory.port_name_prefixes == ("kafka",)
    assert verifyObject(IStreamObserver, kafka_observer_factory.new_observer(lambda n, a: None))


def test_plugins_are_discovered() -> None:
    """load_plugins finds the built-in kafka hint parser and observer by name."""
    from tsgate.plugins import load_plugins

    found = load_plugins()
    assert found.hint_parsers["kafka"] is kafka_hint_parser
    assert found.observers["kafka"] is kafka_observer_factory


# --- header versions ----------------------------------------------------------


def test_api_key_table_is_complete() -> None:
    """Every API key from 0 to the newest (92) is named, names unique."""
    assert sorted(wire.API_KEYS) == list(range(93))
    names = [name for name, _ in wire.API_KEYS.values()]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    "api_key, api_version, request_version, response_version",
    [
        (18, 2, 1, 0),  # ApiVersions before flexible
        (18, 3, 2, 0),  # ApiVersions flexible: request header v2, response header v0
        (18, 4, 2, 0),
        (3, 8, 1, 0),  # Metadata
        (3, 9, 2, 1),
        (0, 8, 1, 0),  # Produce
        (0, 9, 2, 1),
        (1, 11, 1, 0),  # Fetch
        (1, 12, 2, 1),
        (7, 0, 0, 0),  # ControlledShutdown v0: no client_id
        (7, 1, 1, 0),
        (17, 1, 1, 0),  # SaslHandshake: never flexible
        (47, 0, 1, 0),  # OffsetDelete: never flexible
        (53, 0, 1, 0),  # BeginQuorumEpoch v0 predates flexible versions
        (53, 1, 2, 1),
        (68, 0, 2, 1),  # ConsumerGroupHeartbeat: flexible from v0
        (500, 3, 1, 0),  # unknown key: assume the non-flexible layout
    ],
)
def test_header_versions(
    api_key: int, api_version: int, request_version: int, response_version: int
) -> None:
    """Header layout follows each API's first flexible version."""
    assert wire.request_header_version(api_key, api_version) == request_version
    assert wire.response_header_version(api_key, api_version) == response_version


def with_tagged_fields(frame: bytes, fields: bytes) -> bytes:
    """A real v2-header request with ``fields`` in place of its empty tag buffer."""
    header = wire.parse_request_header(frame)
    assert header.header_version == 2 and header.body_offset is not None
    assert frame[header.body_offset - 1] == 0  # the empty tagged-field section
    body = frame[4 : header.body_offset - 1] + fields + frame[header.body_offset :]
    return struct.pack(">i", len(body)) + body


def test_header_tagged_fields_are_skipped() -> None:
    """Tagged fields in a v2 request header are stepped over to find the body."""
    # two fields: tag 0 with 3 bytes, tag 300 (a two-byte varint) with 0 bytes
    fields = b"\x02" + b"\x00\x03abc" + b"\xac\x02\x00"
    frame = with_tagged_fields(sample("kafka_python_apiversions.bin"), fields)
    header = wire.parse_request_header(frame)
    assert header.body_offset == 29 - 1 + len(fields)
    assert wire.api_versions_software(frame, header) == {
        "client_software_name": "kafka-python",
        "client_software_version": "3.0.12",
    }
    plain = kafka_hint_parser.parse(sample("kafka_python_apiversions.bin"))
    assert isinstance(plain, Hint)
    assert kafka_hint_parser.parse(frame) == Hint("kafka", plain.attributes, length=len(frame))


def test_header_tagged_fields_overrun_is_an_error() -> None:
    """A tagged field longer than the request is malformed (HintParseError)."""
    frame = with_tagged_fields(sample("kafka_python_apiversions.bin"), b"\x01\x00\x7f")
    with pytest.raises(wire.KafkaDecodeError):
        wire.parse_request_header(frame)
    with pytest.raises(HintParseError):
        kafka_hint_parser.parse(frame)


# --- hint parser ------------------------------------------------------------

HINTS = [
    (
        "kafka_python_apiversions.bin",  # ApiVersions v4, flexible, header v2
        {"api_key": "api_versions", "api_version": "4", "client_id": "tsgate-capture",
         "client_software_name": "kafka-python", "client_software_version": "3.0.12"},
    ),
    (
        "kafka_python_legacy_client.bin",  # pinned to 2.0: ApiVersions v2, header v1
        {"api_key": "api_versions", "api_version": "2", "client_id": "tsgate-legacy"},
    ),
    (
        "kafka_python_acks0_client.bin",
        {"api_key": "api_versions", "api_version": "4", "client_id": "tsgate-fire-and-forget",
         "client_software_name": "kafka-python", "client_software_version": "3.0.12"},
    ),
]  # fmt: skip


@pytest.mark.parametrize("name, attributes", HINTS)
def test_hint_from_real_first_request(name: str, attributes: dict[str, str]) -> None:
    """The first request of a real kafka-python connection gives its client id and API."""
    data = sample(name)
    length = 4 + struct.unpack_from(">i", data)[0]
    assert kafka_hint_parser.parse(data) == Hint("kafka", attributes, length=length)


def test_hint_from_other_apis() -> None:
    """Any API can open a connection: each real request frame gives its own hint."""
    for frame in frames(sample("kafka_python_producer_client.bin")):
        hint = kafka_hint_parser.parse(frame)
        assert isinstance(hint, Hint)
        assert hint.attributes["client_id"] == "tsgate-capture"
        assert hint.attributes["api_key"] in ("api_versions", "produce")


@pytest.mark.parametrize("name", [n for n, _ in HINTS])
def test_hint_needs_the_whole_request(name: str) -> None:
    """Every strict prefix of the first request is NEED_MORE."""
    data = frames(sample(name))[0]
    for cut in range(len(data)):
        assert kafka_hint_parser.parse(data[:cut]) is NEED_MORE, cut


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",  # PostgreSQL SSLRequest
        sample("pymongo_hello.bin", MONGO_DATA),  # real MongoDB bytes
        struct.pack(">ihhih", 20, 9999, 0, 1, -1),  # an API key Kafka does not have
        struct.pack(">ihhih", 20, 3, 400, 1, -1),  # a version no API reaches
        struct.pack(">ihhih", 20, 3, 1, 1, 300),  # client_id longer than the request
    ],
    ids=["http", "tls", "pg-sslrequest", "mongo", "api-key", "api-version", "client-id"],
)
def test_hint_not_mine(data: bytes) -> None:
    """Bytes whose fixed header Kafka would never send are NotMine."""
    assert isinstance(kafka_hint_parser.parse(data), NotMine)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(name=st.sampled_from([n for n, _ in HINTS]), cuts=st.lists(st.integers(0, 100)))
def test_hint_any_split_same_result(name: str, cuts: list[int]) -> None:
    """Arriving in any pieces, the bytes give NEED_MORE until whole, then the same Hint."""
    data = frames(sample(name))[0]
    expected = kafka_hint_parser.parse(data)
    result = None
    for cut in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        result = kafka_hint_parser.parse(data[:cut])
        if cut < len(data):
            assert result is NEED_MORE
    assert result == expected


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=500)
@given(
    name=st.sampled_from([n for n, _ in HINTS]),
    cut=st.integers(0, 80),
    garbage=st.binary(max_size=200),
)
def test_hint_truncation_plus_garbage(name: str, cut: int, garbage: bytes) -> None:
    """A cut request plus random bytes gives only a ParseResult or HintParseError."""
    result = outcome(sample(name)[:cut] + garbage)
    assert isinstance(result, (NeedMore, NotMine, Hint)) or result == "HintParseError"


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=500)
@given(
    name=st.sampled_from([n for n, _ in HINTS]),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=5),
)
def test_hint_corrupted_bytes(name: str, edits: list[tuple[int, int]]) -> None:
    """A real request with a few bytes overwritten: still only the one error type."""
    data = bytearray(sample(name))
    for where, value in edits:
        data[where % len(data)] = value
    result = outcome(bytes(data))
    assert isinstance(result, (NeedMore, NotMine, Hint)) or result == "HintParseError"


# --- observer ---------------------------------------------------------------

TRACES = {
    "kafka_python_bootstrap.trace": {
        "request.api_versions": 1,
        "request.metadata": 1,
        "response.api_versions": 1,
        "response.metadata": 1,
    },
    "kafka_python_producer.trace": {
        "request.api_versions": 1,
        "request.produce": 3,
        "response.api_versions": 1,
        "response.produce": 3,
    },
    # acks=0: the Produce is never answered, and is not left waiting either
    "kafka_python_acks0.trace": {
        "request.api_versions": 1,
        "request.produce": 1,
        "response.api_versions": 1,
    },
    "kafka_python_legacy.trace": {
        "request.api_versions": 1,
        "request.produce": 1,
        "response.api_versions": 1,
        "response.produce": 1,
    },
}


@pytest.mark.parametrize("name", sorted(TRACES))
def test_observer_counts_real_traffic(name: str) -> None:
    """Requests and their matched responses are counted per API."""
    assert dict(replay(trace(name)).counters) == TRACES[name]


@pytest.mark.parametrize("name", sorted(TRACES))
def test_observer_latency_per_api(name: str) -> None:
    """Every matched response is timed, under response.<api>_duration."""
    rec = replay(trace(name))
    expected = Counter(
        {f"{n}_duration": c for n, c in TRACES[name].items() if n.startswith("response.")}
    )
    assert Counter(n for n, _ in rec.samples) == expected
    assert all(v > 0 for _, v in rec.samples)


def test_observer_latency_value() -> None:
    """The duration is the clock difference between request and response bytes."""
    rec = Recorder()
    observer = timed(rec)
    client, server = trace("kafka_python_bootstrap.trace")[:2]
    rec.now = 100.0
    observer.client_data(client[1])
    rec.now = 100.25
    observer.server_data(server[1])
    assert rec.samples == [("response.api_versions_duration", 0.25)]


def test_observer_attributes() -> None:
    """The access log gets the client id and, from ApiVersions, the client software."""
    observer = KafkaObserverFactory().new_observer(lambda n, a: None)
    observer.client_data(sample("kafka_python_producer_client.bin"))
    assert observer.attributes() == {
        "client_id": "tsgate-capture",
        "client_software_name": "kafka-python",
        "client_software_version": "3.0.12",
    }


def test_observer_unknown_api_and_correlation() -> None:
    """An API key we do not know is request.unknown; a stray response response.unknown."""
    frame = bytearray(sample("kafka_python_apiversions.bin"))
    struct.pack_into(">h", frame, 4, 1000)
    rec = Recorder()
    observer = timed(rec)
    observer.client_data(bytes(frame))
    observer.server_data(struct.pack(">ii", 4, 1))  # answers correlation id 1
    observer.server_data(struct.pack(">ii", 4, 77))  # answers nothing we saw
    assert dict(rec.counters) == {"request.unknown": 1, "response.unknown": 2}


def rechunk(records: Trace, cuts: list[int]) -> Trace:
    out: Trace = []
    for i, (direction, data) in enumerate(records):
        points = sorted({c % (len(data) + 1) for c in cuts[i::5]} | {0, len(data)})
        out += [(direction, data[a:b]) for a, b in zip(points, points[1:])]
    return out


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=100)
@given(name=st.sampled_from(sorted(TRACES)), cuts=st.lists(st.integers(0, 1 << 12), max_size=60))
def test_observer_any_chunking_same_counters(name: str, cuts: list[int]) -> None:
    """However the reads are split, the counters are the same."""
    records = trace(name)
    assert replay(rechunk(records, cuts)).counters == replay(records).counters


def test_observer_outstanding_table_is_bounded() -> None:
    """Unanswered requests are forgotten past MAX_OUTSTANDING (counted); acks=0 never wait."""
    answered = frames(sample("kafka_python_producer_client.bin"))[1]  # Produce acks=1
    fire_and_forget = frames(sample("kafka_python_acks0_client.bin"))[1]  # Produce acks=0
    rec = Recorder()
    observer = timed(rec)
    for cid in range(MAX_OUTSTANDING + 10):
        frame = bytearray(fire_and_forget)
        struct.pack_into(">i", frame, 8, cid)
        observer.client_data(bytes(frame))
    assert "outstanding_overflow" not in rec.counters
    for cid in range(MAX_OUTSTANDING + 10):
        frame = bytearray(answered)
        struct.pack_into(">i", frame, 8, cid)
        observer.client_data(bytes(frame))
    assert rec.counters["outstanding_overflow"] == 10


def test_observer_memory_bounded_for_huge_request() -> None:
    """A Produce declaring 60 MB is counted from its header and skipped by counting."""
    frame = bytearray(frames(sample("kafka_python_producer_client.bin"))[1])
    total = 60_000_000
    struct.pack_into(">i", frame, 0, total - 4)
    rec = Recorder()
    observer = timed(rec)
    tracemalloc.start()
    try:
        observer.client_data(bytes(frame))
        filler = bytes(65536)
        for _ in range((total - len(frame)) // len(filler)):
            observer.client_data(filler)
        observer.client_data(bytes((total - len(frame)) % len(filler)))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 500_000
    # the stream is back in step: the next real request is decoded
    observer.client_data(frames(sample("kafka_python_producer_client.bin"))[2])
    assert rec.counters == Counter({"request.produce": 2})


@pytest.mark.parametrize(
    "direction, data",
    [
        ("C", struct.pack(">i", -5) + bytes(8)),
        ("C", struct.pack(">i", (1 << 30) + 1) + bytes(8)),
        ("C", struct.pack(">ihhih", 10, 3, -1, 1, -1)),  # negative api_version
        ("S", struct.pack(">i", 2) + bytes(8)),  # shorter than a correlation id
    ],
    ids=["negative-size", "huge-size", "negative-version", "short-response"],
)
def test_observer_decode_error_then_quiet(direction: str, data: bytes) -> None:
    """A frame Kafka cannot send is one decode_error; nothing is counted after it."""
    rec = Recorder()
    observer = timed(rec)
    (observer.client_data if direction == "C" else observer.server_data)(data)
    for d, chunk in trace("kafka_python_producer.trace"):
        (observer.client_data if d == "C" else observer.server_data)(chunk)
    assert dict(rec.counters) == {"decode_error": 1}


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(cut=st.integers(0, 500), garbage=st.binary(max_size=300), server=st.binary(max_size=100))
def test_observer_never_raises(cut: int, garbage: bytes, server: bytes) -> None:
    """Truncated real traffic plus random bytes: counters at most, never an exception."""
    rec = Recorder()
    observer = timed(rec)
    observer.client_data(sample("kafka_python_producer_client.bin")[:cut] + garbage)
    observer.server_data(sample("kafka_python_producer_server.bin")[:cut] + server)
    assert rec.counters["decode_error"] <= 1
    observer.attributes()
