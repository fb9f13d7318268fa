"""
The ``postgres`` plugins on bytes captured from psql/psycopg talking to a
real PostgreSQL 15 (``tests/data/postgres/``, see samples.json and
``tests/support/capture_samples.py``).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.capture import direction_bytes, observe, read_capture, rechunk
from tests.support.properties import check_truncated_with_garbage, parse_as_delivered
from tsgate.hints.postgres import (
    GSSENC_REQUEST_CODE,
    PostgresObserver,
    parse_startup,
)
from tsgate.interfaces import NEED_MORE, Hint, HintParseError, NotMine, Preamble
from tsgate.plugins.postgres import postgres_hints, postgres_observer, postgres_starttls

DATA = Path(__file__).resolve().parents[1] / "data" / "postgres"
TLS_DATA = Path(__file__).resolve().parents[1] / "data" / "tls"


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def capture(name: str) -> list[tuple[str, bytes]]:
    return read_capture(DATA / name)


#: The GSSENCRequest from the protocol docs: no real sample exists because
#: libpq sends it only when it holds a Kerberos ticket.
GSSENC_REQUEST = struct.pack(">ii", 8, GSSENC_REQUEST_CODE)

HINTS = [
    ("psql_startup.bin", {"request": "startup", "version": "3.0", "user": "postgres",
                          "database": "postgres", "app_name": "tsgate-capture"}, 73),
    ("psql_sslrequest.bin", {"request": "ssl"}, 8),
    ("cancel_request.bin", None, 16),
]

#: First client message of each conversation, and what it says.
FIRST_MESSAGES = [
    ("psql_plain.cap", "startup", "postgres", "tsgate-capture"),
    ("psql_no_such_db.cap", "startup", "no_such_db", "psql"),
    ("psycopg_extended.cap", "startup", "postgres", "psycopg-capture"),
    ("psql_cancelled.cap", "startup", "postgres", "psql"),
    ("psql_ssl.cap", "ssl", None, None),
]


@pytest.mark.parametrize("name,attributes,length", HINTS)
def test_hint_from_real_first_message(name, attributes, length):
    """Each real first message gives a postgres hint of its own length."""
    hint = postgres_hints.parse(sample(name))
    assert isinstance(hint, Hint)
    assert hint.protocol == "postgres"
    assert hint.length == length
    if attributes is not None:
        assert dict(hint.attributes) == attributes
    else:
        assert hint.attributes["request"] == "cancel"
        assert int(hint.attributes["process_id"]) > 0
        assert "secret" not in " ".join(hint.attributes)


@pytest.mark.parametrize("name,kind,database,app_name", FIRST_MESSAGES)
def test_hint_from_conversations(name, kind, database, app_name):
    """The hint parser reads the start of whole conversations too."""
    hint = postgres_hints.parse(direction_bytes(capture(name), "c"))
    assert isinstance(hint, Hint)
    assert hint.attributes["request"] == kind
    assert hint.attributes.get("database") == database
    assert hint.attributes.get("app_name") == app_name


def test_scram_user_named_not_password():
    """The psycopg session logs in as scram_user; its password never shows."""
    hint = postgres_hints.parse(direction_bytes(capture("psycopg_extended.cap"), "c"))
    assert hint.attributes["user"] == "scram_user"
    assert "scram-secret" not in repr(hint)


def test_gssenc_request():
    """A GSSENCRequest is recognised, but is not a STARTTLS preamble."""
    assert postgres_hints.parse(GSSENC_REQUEST).attributes == {"request": "gssenc"}
    assert isinstance(postgres_starttls.parse(GSSENC_REQUEST), NotMine)


@pytest.mark.parametrize(
    "name", ["openssl_sni.bin", "curl_tls12.bin", "python_tls12.bin"]
)
def test_tls_client_hello_not_mine_from_first_byte(name):
    """A ClientHello (direct TLS) is rejected from its first byte."""
    hello = (TLS_DATA / name).read_bytes()
    assert isinstance(postgres_hints.parse(hello[:1]), NotMine)
    assert isinstance(postgres_starttls.parse(hello[:1]), NotMine)


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\n", b"*1\r\n$4\r\nPING\r\n", b"\x00\x00\xff\xff\x00\x03\x00\x00",
     b"\x00\x00\x00\x04", struct.pack(">ii", 8, 2 << 16)],
)
def test_not_postgres(data):
    """HTTP, RESP, an oversized length, a too-short length, protocol 2: not mine."""
    assert isinstance(postgres_hints.parse(data), NotMine)


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">ii", 12, 80877103) + b"\0" * 4,  # SSLRequest with the wrong length
        struct.pack(">ii", 12, 80877102) + b"\0" * 4,  # CancelRequest with the wrong length
        struct.pack(">ii", 12, 3 << 16) + b"user",  # no NUL terminator
        struct.pack(">ii", 14, 3 << 16) + b"user\0\0",  # a name without a value
        struct.pack(">ii", 14, 3 << 16) + b"\0abc\0\0",  # an empty name
        struct.pack(">ii", 12, 3 << 16) + b"\xff\0\0\0",  # not UTF-8
    ],
)
def test_malformed_raises_the_one_error(data):
    """PostgreSQL-shaped but malformed first messages raise HintParseError."""
    with pytest.raises(HintParseError):
        postgres_hints.parse(data)


def test_startup_needs_whole_message():
    """Every strict prefix of a StartupMessage is NEED_MORE."""
    data = sample("psql_startup.bin")
    assert all(parse_startup(data[:i]) is NEED_MORE for i in range(len(data)))


def test_starttls_preamble_from_psql():
    """psql's SSLRequest: the gateway answers S and replays the same 8 bytes."""
    request = sample("psql_sslrequest.bin")
    preamble = postgres_starttls.parse(request)
    assert preamble == Preamble(
        protocol="postgres", length=8, client_reply=b"S", upstream_request=request,
        upstream_reply=b"S", attributes={"request": "ssl"},
    )
    assert postgres_starttls.parse(request[:5]) is NEED_MORE
    assert isinstance(postgres_starttls.parse(sample("psql_startup.bin")), NotMine)
    assert isinstance(postgres_starttls.parse(sample("cancel_request.bin")), NotMine)


def test_preamble_followed_by_client_hello():
    """In the relayed bytes the SSLRequest is followed by the ClientHello."""
    client = direction_bytes(capture("psql_ssl.cap"), "c")
    preamble = postgres_starttls.parse(client)
    assert isinstance(preamble, Preamble)
    assert client[preamble.length] == 0x16


SAMPLES = ["psql_startup.bin", "psql_sslrequest.bin", "cancel_request.bin"]


@given(name=st.sampled_from(SAMPLES), cuts=st.lists(st.integers(0, 100), max_size=10))
def test_any_split_same_hint(name, cuts):
    """Both parsers answer the same however the first message is split."""
    data = sample(name)
    for parser in (postgres_hints, postgres_starttls):
        assert parse_as_delivered(parser, data, cuts) == parser.parse(data)


@given(name=st.sampled_from(SAMPLES), cut=st.integers(0, 100), garbage=st.binary(max_size=64))
def test_truncation_plus_garbage(name, cut, garbage):
    """Truncated and garbage-extended: only NEED_MORE, NotMine, an answer or the one error."""
    data = sample(name)
    for parser in (postgres_hints, postgres_starttls):
        check_truncated_with_garbage(parser, data[: cut % (len(data) + 1)], garbage)


# -- observer ----------------------------------------------------------------

OBSERVED = {
    "psql_plain.cap": {
        "sessions_unencrypted": 1, "frontend.startup": 1, "frontend.query": 3,
        "frontend.terminate": 1, "backend.data_row": 1, "errors": 2, "errors.error": 2,
        "errors.sqlstate_class.22": 1, "errors.sqlstate_class.42": 1,
        "statements": 1, "statements_select": 1,
    },
    "psql_no_such_db.cap": {"errors.fatal": 1, "errors.sqlstate_class.3d": 1},
    "psql_cancelled.cap": {"frontend.query": 1, "errors.sqlstate_class.57": 1},
    "psycopg_extended.cap": {
        "frontend.password": 2, "frontend.parse": 3, "frontend.bind": 4, "frontend.execute": 4,
        "frontend.sync": 5, "backend.parse_complete": 3, "errors.sqlstate_class.22": 1,
        "statements": 6, "statements_select": 3, "statements_other": 3,  # BEGIN, BEGIN, ROLLBACK
        "transactions": 1, "transactions_rollback": 1,
    },
    "psql_ssl.cap": {"frontend.ssl_request": 1, "sessions_encrypted": 1},
}


@pytest.mark.parametrize("name", sorted(OBSERVED))
def test_observer_counts_real_conversation(name):
    """The counters read off each real conversation, and no decode error."""
    counts, attributes = observe(postgres_observer, capture(name))
    assert "decode_error" not in counts
    for key, value in OBSERVED[name].items():
        assert counts.get(key) == value, key
    if name != "psql_ssl.cap":
        assert counts["messages_frontend"] == sum(
            v for k, v in counts.items() if k.startswith("frontend.")
        )
        assert attributes["user"] in ("postgres", "scram_user")
    else:
        assert attributes == {"tls": "true"}


@given(name=st.sampled_from(sorted(OBSERVED)),
       cuts=st.lists(st.integers(0, 4096), max_size=30))
def test_observer_any_chunking_same_counters(name, cuts):
    """Re-splitting each direction's reads does not change a single counter."""
    records = capture(name)
    assert observe(postgres_observer, list(rechunk(records, cuts))) == observe(
        postgres_observer, records
    )


def _session_prefix() -> list[tuple[str, bytes]]:
    """The first two turns of a real session: StartupMessage and the server's welcome."""
    records = capture("psql_plain.cap")
    return records[:2]


def test_observer_memory_bounded_by_huge_message():
    """A 64 MiB CopyData is skipped, not buffered, and counting resumes after it."""
    counts: dict[str, int] = {}
    obs = PostgresObserver(lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a))
    for d, data in _session_prefix():
        (obs.client_data if d == "c" else obs.server_data)(data)
    size = 64 << 20
    obs.client_data(b"d" + struct.pack(">i", size + 4))
    chunk = b"x" * 65536
    peak = 0
    for _ in range(size // len(chunk)):
        obs.client_data(chunk)
        peak = max(peak, obs.buffered())
    assert peak == 0
    obs.client_data(b"X" + struct.pack(">i", 4))  # Terminate after the big message
    assert counts["frontend.copy_data"] == 1
    assert counts["frontend.terminate"] == 1
    assert "decode_error" not in counts


def test_observer_bounded_error_prefix():
    """An ErrorResponse body is read only up to its prefix cap, never whole."""
    counts: dict[str, int] = {}
    obs = PostgresObserver(lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a))
    for d, data in _session_prefix():
        (obs.client_data if d == "c" else obs.server_data)(data)
    body = b"SERROR\0VERROR\0C42P01\0M" + b"m" * (8 << 20) + b"\0\0"
    frame = b"E" + struct.pack(">i", len(body) + 4) + body
    peak = 0
    for i in range(0, len(frame), 65536):
        obs.server_data(frame[i : i + 65536])
        peak = max(peak, obs.buffered())
    assert peak <= 65536 + 1024
    assert counts["errors.sqlstate_class.42"] == 1


def test_observer_quiet_after_decode_error():
    """One unknown message type: decode_error once, then nothing more is counted."""
    counts: dict[str, int] = {}
    obs = PostgresObserver(lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a))
    records = capture("psql_plain.cap")
    for d, data in records[:2]:
        (obs.client_data if d == "c" else obs.server_data)(data)
    before = dict(counts)
    obs.client_data(b"\x01\x00\x00\x00\x04")
    assert counts == {**before, "decode_error": 1}
    for d, data in records[2:]:
        (obs.client_data if d == "c" else obs.server_data)(data)
    obs.client_data(b"garbage" * 1000)
    assert counts == {**before, "decode_error": 1}
    assert obs.buffered() == 0


def test_observer_direct_tls_client_is_quiet_not_an_error():
    """A ClientHello as the first client bytes (PG17 direct TLS): encrypted, no error."""
    counts, _ = observe(
        postgres_observer, [("c", (TLS_DATA / "openssl_sni.bin").read_bytes())]
    )
    assert counts == {"sessions": 1, "sessions_encrypted": 1}


def test_observer_server_refuses_tls():
    """SSLRequest answered N: the client's StartupMessage follows in the clear."""
    startup = sample("psql_startup.bin")
    records = [("c", sample("psql_sslrequest.bin")), ("s", b"N"), ("c", startup)]
    counts, attributes = observe(postgres_observer, records)
    assert counts["backend.encryption_refused"] == 1
    assert counts["sessions_unencrypted"] == 1
    assert attributes["app_name"] == "tsgate-capture"


@given(name=st.sampled_from(sorted(OBSERVED)), cut=st.integers(0, 4096),
       garbage=st.binary(max_size=256))
def test_observer_truncation_plus_garbage_only_decode_error(name, cut, garbage):
    """A real conversation cut anywhere, then garbage both ways: never an exception,
    at most one decode_error, and nothing buffered beyond the body-prefix cap."""
    flat = [(d, data[i : i + 1]) for d, data in capture(name) for i in range(len(data))]
    records = [*flat[:cut], ("c", garbage), ("s", garbage)]
    counts: dict[str, int] = {}
    obs = PostgresObserver(lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a))
    for d, data in records:
        (obs.client_data if d == "c" else obs.server_data)(data)
    assert counts.get("decode_error", 0) <= 1
    assert obs.buffered() <= 5 + 10000 + 256


def _kafka_requests() -> list[bytes]:
    """Every request frame kafka-python sent in the Kafka samples (size-prefixed)."""
    frames = []
    for path in sorted((DATA.parent / "kafka").glob("*_client.bin")):
        data = path.read_bytes()
        pos = 0
        while pos + 4 <= len(data):
            (size,) = struct.unpack_from(">i", data, pos)
            frames.append(data[pos : pos + 4 + size])
            pos += 4 + size
    return frames


def test_other_protocols_first_bytes_not_mine():
    """Real Kafka requests (Metadata's api_key 3 looks like protocol 3.x) and MongoDB
    messages are not PostgreSQL, and raise nothing."""
    frames = _kafka_requests()
    assert any(frame[4:6] == b"\x00\x03" for frame in frames)  # a Metadata request is there
    others = frames + [p.read_bytes() for p in sorted((DATA.parent / "mongo").glob("*.bin"))]
    for data in others:
        assert isinstance(postgres_hints.parse(data), NotMine), data[:16]
        assert isinstance(postgres_starttls.parse(data), NotMine), data[:16]


def _timed_run(records, cuts=()):
    """Feed a conversation to a timed observer whose clock is the record index."""
    now = [0.0]
    samples: list[tuple[str, float]] = []
    counts: dict[str, int] = {}
    factory = postgres_observer
    obs = factory.new_timed_observer(
        lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a),
        lambda name, value: samples.append((name, value)),
        lambda: now[0],
    )
    for index, (d, data) in enumerate(rechunk(records, cuts) if cuts else records):
        now[0] = float(index)
        (obs.client_data if d == "c" else obs.server_data)(data)
    return counts, samples


@pytest.mark.parametrize("name", ["psql_plain.cap", "psycopg_extended.cap"])
def test_timed_observer_query_durations(name):
    """One query.duration per Query/Sync, answered by the ReadyForQuery after it."""
    records = capture(name)
    counts, samples = _timed_run(records)
    untimed, _ = observe(postgres_observer, records)
    assert counts == untimed  # timing changes no counter
    requests = counts.get("frontend.query", 0) + counts.get("frontend.sync", 0)
    assert requests > 0
    assert len(samples) == requests == counts["backend.ready_for_query"] - 1  # not startup's
    assert all(n == "query.duration" and v > 0 for n, v in samples)


@given(cuts=st.lists(st.integers(0, 4096), max_size=20))
def test_timed_observer_any_chunking_same_sample_count(cuts):
    records = capture("psycopg_extended.cap")
    _, samples = _timed_run(records, cuts)
    assert len(samples) == len(_timed_run(records)[1])


def test_timed_observer_bounded_pending():
    """A client pipelining more than MAX_PENDING syncs unanswered: timing stops, counting not."""
    from tsgate.hints.postgres import MAX_PENDING

    records = capture("psql_plain.cap")[:2]
    syncs = (b"S" + struct.pack(">i", 4)) * (MAX_PENDING + 5)
    counts, samples = _timed_run([*records, ("c", syncs), ("s", b"Z\x00\x00\x00\x05I")])
    assert counts["frontend.sync"] == MAX_PENDING + 5
    assert counts["latency_untracked"] == 1
    assert samples == []
