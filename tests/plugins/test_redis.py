"""
The ``redis`` plugins on bytes captured from redis-cli, redis-benchmark and
nc talking to a real redis-server (``tests/data/redis/``, see samples.json).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.capture import direction_bytes, observe, read_capture, rechunk
from tests.support.properties import check_truncated_with_garbage, parse_as_delivered
from tsgate.hints.redis import RedisObserver
from tsgate.interfaces import NEED_MORE, Hint, HintParseError, NotMine
from tsgate.plugins.redis import redis_hints, redis_observer

DATA = Path(__file__).resolve().parents[1] / "data" / "redis"
TLS_DATA = Path(__file__).resolve().parents[1] / "data" / "tls"


def capture(name: str) -> list[tuple[str, bytes]]:
    return read_capture(DATA / name)


def client_turns(name: str) -> list[bytes]:
    """Each client write of a conversation (each redis-cli run starts a connection)."""
    return [d for direction, d in capture(name) if direction == "c"]


CLI_COMMANDS = ["ping", "set", "get", "incr", "auth", "hello", "lpush", "lrange"]


@pytest.mark.parametrize("index,command", list(enumerate(CLI_COMMANDS)))
def test_hint_redis_cli_commands(index, command):
    """Every redis-cli connection's first command is named, lower case."""
    hint = redis_hints.parse(client_turns("redis_cli.cap")[index])
    assert isinstance(hint, Hint)
    assert hint.protocol == "redis"
    assert dict(hint.attributes) == {"command": command}


def test_hint_never_carries_auth_arguments():
    """AUTH's password is never read into the hint."""
    data = client_turns("redis_cli.cap")[CLI_COMMANDS.index("auth")]
    assert b"not-the-password" in data
    hint = redis_hints.parse(data)
    assert "not-the-password" not in repr(hint)
    assert hint.length < data.index(b"not-the-password")


def test_hint_inline_and_benchmark():
    """An inline PING typed into nc, and redis-benchmark's first pipeline."""
    assert redis_hints.parse(direction_bytes(capture("inline_nc.cap"), "c")).attributes == {
        "command": "ping"
    }
    bench = (DATA / "redis_benchmark_client.bin").read_bytes()
    assert redis_hints.parse(bench).attributes == {"command": "config"}


@pytest.mark.parametrize(
    "data,verdict",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", NotMine),
        (b"POST /x HTTP/1.1\r\n", NotMine),
        (b"\x16\x03\x01\x02\x00", NotMine),
        (b"\x00\x00\x00\x08\x04\xd2\x16/", NotMine),
        (b"*x\r\n", NotMine),
        (b"hello there\r\n", Hint),
        (b"GET key\r\n", Hint),
        (b"GET key", type(NEED_MORE)),
        (b"*1\r\n$4\r\nPI", type(NEED_MORE)),
        (b"*1\r\n$100\r\n", Hint),  # too long for a command name: command=unknown
    ],
)
def test_hint_verdicts(data, verdict):
    """HTTP (even GET), TLS and PostgreSQL are not Redis; partial commands need more."""
    assert isinstance(redis_hints.parse(data), verdict)


def test_tls_hello_not_redis():
    for name in ("openssl_sni.bin", "curl_tls12.bin"):
        assert isinstance(redis_hints.parse((TLS_DATA / name).read_bytes()), NotMine)


@pytest.mark.parametrize(
    "data", [b"*0\r\n", b"*2\r\n:1\r\n", b"*1\r\n$x\r\n", b"*1\r\n$4\r\nPINGxx"]
)
def test_hint_malformed_raises_the_one_error(data):
    """RESP-shaped but malformed requests raise HintParseError."""
    with pytest.raises(HintParseError):
        redis_hints.parse(data)


SAMPLES = [*client_turns("redis_cli.cap"), direction_bytes(capture("inline_nc.cap"), "c"),
           (DATA / "redis_benchmark_client.bin").read_bytes()[:300]]


@given(data=st.sampled_from(SAMPLES), cuts=st.lists(st.integers(0, 300), max_size=10))
def test_any_split_same_hint(data, cuts):
    """The hint does not depend on how the first command was split."""
    assert parse_as_delivered(redis_hints, data, cuts) == redis_hints.parse(data)


@given(data=st.sampled_from(SAMPLES), cut=st.integers(0, 300), garbage=st.binary(max_size=64))
def test_truncation_plus_garbage(data, cut, garbage):
    """Truncated and garbage-extended: NEED_MORE, NotMine, a hint or the one error."""
    check_truncated_with_garbage(redis_hints, data[: cut % (len(data) + 1)], garbage)


# -- observer ----------------------------------------------------------------


def test_observer_redis_cli():
    """Eight redis-cli commands, two ERR replies (INCR on a string, AUTH without a password)."""
    counts, attributes = observe(redis_observer, capture("redis_cli.cap"))
    assert counts["commands"] == 8
    assert all(counts[f"command.{c}"] == 1 for c in CLI_COMMANDS)
    assert counts["replies"] == 8  # HELLO 3's RESP3 map counts as one reply
    assert counts["errors"] == counts["error.err"] == 2
    assert attributes == {"command": "ping"}


def test_observer_inline_commands():
    """Inline commands typed into nc, one unknown to Redis."""
    counts, _ = observe(redis_observer, capture("inline_nc.cap"))
    assert {k: v for k, v in counts.items() if k.startswith("command")} == {
        "commands": 5, "command.ping": 1, "command.set": 1, "command.get": 1,
        "command.unknown": 1, "command.quit": 1,
    }
    assert counts["replies"] == 5
    assert counts["error.err"] == 1


def test_observer_benchmark_pipelines():
    """redis-benchmark -n 200 -P 7: 203 of each (pipelines round up), one reply per command."""
    counts, _ = observe(redis_observer, capture("redis_benchmark.cap"))
    for command in ("set", "get", "incr", "lpush", "rpush", "lpop", "rpop", "sadd", "hset",
                    "spop"):
        assert counts[f"command.{command}"] == 203
    assert counts["command.ping"] == 2 * 203  # PING_INLINE and PING_MBULK
    assert counts["replies"] == counts["commands"]
    assert "decode_error" not in counts and "errors" not in counts


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, 1 << 16), max_size=40))
def test_observer_benchmark_any_chunking(cuts):
    """Pipelines split anywhere (mid-line, mid-bulk) give the same counters."""
    records = capture("redis_benchmark.cap")
    assert observe(redis_observer, list(rechunk(records, cuts))) == observe(
        redis_observer, records
    )


@given(name=st.sampled_from(["redis_cli.cap", "inline_nc.cap"]),
       cuts=st.lists(st.integers(0, 512), max_size=30))
def test_observer_any_chunking(name, cuts):
    records = capture(name)
    assert observe(redis_observer, list(rechunk(records, cuts))) == observe(
        redis_observer, records
    )


def _counter() -> tuple[dict[str, int], RedisObserver]:
    counts: dict[str, int] = {}
    return counts, RedisObserver(lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a))


def test_observer_memory_bounded_by_huge_bulk():
    """A SET with a 64 MiB value and a 64 MiB GET reply are skipped, not buffered."""
    counts, obs = _counter()
    size = 64 << 20
    obs.client_data(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % size)
    obs.server_data(b"$%d\r\n" % size)
    chunk = b"v" * 65536
    peak = 0
    for _ in range(size // len(chunk)):
        obs.client_data(chunk)
        obs.server_data(chunk)
        peak = max(peak, obs.buffered())
    obs.client_data(b"\r\n*1\r\n$4\r\nPING\r\n")
    obs.server_data(b"\r\n+PONG\r\n")
    assert peak == 0
    assert counts == {"commands": 2, "command.set": 1, "command.ping": 1, "replies": 2}


def test_observer_line_cap():
    """A line without a newline is buffered up to 64 KiB, then it is a decode error."""
    counts, obs = _counter()
    for _ in range(100):
        obs.client_data(b"a" * 1024)
        assert obs.buffered() <= 65 * 1024
    assert counts == {"decode_error": 1}
    assert obs.buffered() == 0


def test_observer_quiet_after_decode_error():
    """A non-bulk element in a request: decode_error once, then silence."""
    counts, obs = _counter()
    obs.client_data(b"*1\r\n$4\r\nPING\r\n")
    obs.client_data(b"*1\r\n:5\r\n")
    assert counts == {"commands": 1, "command.ping": 1, "decode_error": 1}
    for direction, data in capture("redis_benchmark.cap"):
        (obs.client_data if direction == "c" else obs.server_data)(data)
    assert counts == {"commands": 1, "command.ping": 1, "decode_error": 1}


def test_observer_resp3_nested_and_attributes():
    """RESP3 maps, sets, attributes, pushes and blob errors nest and count correctly."""
    counts, obs = _counter()
    obs.server_data(
        b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n"  # attribute, then...
        b"*2\r\n:1\r\n:2\r\n"  # ...the reply it annotates
        b"~2\r\n#t\r\n_\r\n"
        b">2\r\n$7\r\nmessage\r\n$2\r\nhi\r\n"
        b"!21\r\nSYNTAX invalid syntax\r\n"
        b"%2\r\n+a\r\n*1\r\n-WRONGTYPE x\r\n+b\r\n(123\r\n"
    )
    assert counts == {"replies": 4, "pushes": 1, "errors": 2, "error.other": 1,
                      "error.wrongtype": 1}


@given(name=st.sampled_from(["redis_cli.cap", "inline_nc.cap"]), cut=st.integers(0, 1024),
       garbage=st.binary(max_size=256))
def test_observer_truncation_plus_garbage_only_decode_error(name, cut, garbage):
    """A real conversation cut anywhere, then garbage both ways: at most one decode_error."""
    flat = [(d, data[i : i + 1]) for d, data in capture(name) for i in range(len(data))]
    counts, _ = observe(redis_observer, [*flat[:cut], ("c", garbage), ("s", garbage)])
    assert counts.get("decode_error", 0) <= 1


@pytest.mark.parametrize("split", [None, 5, 12])
def test_observer_array_too_long_is_a_decode_error(split):
    """More than Redis's 1048576 elements is refused, in one read or split."""
    counts, obs = _counter()
    data = b"*9999999\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    if split is None:
        obs.client_data(data)
    else:
        obs.client_data(data[:split])
        obs.client_data(data[split:])
    assert counts == {"decode_error": 1}


def test_other_protocols_first_bytes_not_redis():
    """Real PostgreSQL, Kafka and MongoDB client bytes are not Redis, and raise nothing."""
    data_dir = DATA.parent
    samples = [p.read_bytes() for p in sorted((data_dir / "postgres").glob("*.bin"))]
    for proto in ("kafka", "mongo"):
        samples += [p.read_bytes() for p in sorted((data_dir / proto).glob("*_client.bin"))]
    assert len(samples) > 3
    for data in samples:
        assert isinstance(redis_hints.parse(data), NotMine), data[:16]
